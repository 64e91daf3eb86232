#!/bin/sh
# Install the Debian packages saltcd's sandbox and tests run for real:
# Docker Engine (one private dockerd per simulated host), the distribution
# registry, a static busybox for the FROM-scratch example image, and HAProxy
# (one per simulated host, the start-first strategy's switch).
# Installing docker.io does not make saltcd use the machine's own engine.
set -eu
missing=""
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
# The example image is FROM scratch: it needs the static busybox, not any busybox.
dpkg -s busybox-static >/dev/null 2>&1 || missing="$missing busybox-static"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"
# Several masters share an etcd cluster (the HA tests start three members).
command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "saltcd: need root to install:$missing" >&2
        exit 1
    fi
    echo "saltcd: installing$missing"
    # The sandbox starts its own haproxy (and dockerd) processes: Debian's
    # services must not start on install. A policy-rc.d that refuses every
    # start (exit 101) is the Debian way; ours exists only for this install
    # and only if the machine has none (container images often ship one).
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
