"""
saltcd_drains: the master engine that runs saltcd's rollouts.

``deploy.accept`` (the reactor), ``deploy.resume`` (the schedule) and anyone
else fire ``saltcd/drain/<app>/<env>``; this engine runs that app/env's queue
in a worker thread, one app/env at a time. Salt finds this engine through
saltcd's ``salt.loader`` entry point; ``python -m saltcd.master_config`` only
adds it to the master's engines:

.. code-block:: yaml

    engines:
      - saltcd_drains: {}
"""

from saltcd.master import engines

__virtualname__ = "saltcd_drains"


def __virtual__():
    return __virtualname__


def start():
    """Run each app/env's queue when asked, until the master stops this process."""
    engines.run_queues(__opts__)  # noqa: F821 - Salt's dunder
