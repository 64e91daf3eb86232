"""Ports for test servers on loopback."""

import socket


def free_port(address="127.0.0.1"):
    """A port nothing listens on at `address` now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]
