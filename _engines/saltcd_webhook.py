"""
saltcd_webhook: the master engine that receives registry notifications.

It replaces Salt's ``webhook`` engine, which puts every request (headers with
the bearer token, bodies up to Tornado's 100 MB) on the master's bus: this one
checks each post at the door (saltcd.ingress.webhook says how) and fires at
most one sanitized, MAC'd ``saltcd/ingress/<source>`` event for it.

Salt finds this engine through saltcd's ``salt.loader`` entry point;
``python -m saltcd.master_config`` adds it to the master's engines:

.. code-block:: yaml

    engines:
      - saltcd_webhook:
          address: 127.0.0.1
          port: 8787
          ssl_crt: /etc/pki/tls/certs/saltcd.crt   # optional: TLS (bearer tokens
          ssl_key: /etc/pki/tls/private/saltcd.key # are readable on plain HTTP)
"""

from saltcd import vocabulary
from saltcd.master import engines

__virtualname__ = "saltcd_webhook"


def __virtual__():
    return __virtualname__


def start(address=vocabulary.WEBHOOK_ADDRESS, port=vocabulary.WEBHOOK_PORT, ssl_crt=None, ssl_key=None):
    """Serve POST /saltcd/<source> until the master stops this process."""
    engines.serve_webhook(__opts__, address, port, ssl_crt, ssl_key)  # noqa: F821 - Salt's dunder
