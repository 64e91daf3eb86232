#!/bin/sh
# Install the Debian packages saltcd's sandbox and tests run for real:
# Docker Engine (one private dockerd per simulated host), the distribution
# registry, and a static busybox for the FROM-scratch example image.
# Installing docker.io does not make saltcd use the machine's own engine.
set -eu
missing=""
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
# The example image is FROM scratch: it needs the static busybox, not any busybox.
dpkg -s busybox-static >/dev/null 2>&1 || missing="$missing busybox-static"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "saltcd: need root to install:$missing" >&2
        exit 1
    fi
    echo "saltcd: installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
