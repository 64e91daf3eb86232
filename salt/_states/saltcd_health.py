"""
The health gate of a deployed container, as a state.

``saltcd_health.passing`` waits until an HTTP health URL answers the expected
status, then keeps probing for ``settle`` seconds: a container that starts and
crashes a few seconds later fails here instead of counting as deployed. It also
fails fast when the container has exited, instead of waiting out the timeout.

.. code-block:: yaml

    saltcd-deploy-saltcd_health-passing:
      saltcd_health.passing:
        - name: http://127.0.0.1:8080/health
        - container: web
        - timeout: 30
        - interval: 1
        - settle: 5
"""


def __virtual__():
    return "saltcd_health"


def passing(name, container=None, timeout=30, interval=1, settle=0, status=200, check="http", command=None):
    """Wait until the container is healthy by ``check`` (by default ``name``, a URL,
    answers ``status``; ``tcp``: ``name`` is ``tcp://host:port``; ``command``,
    ``docker``, ``running``: see ``saltcd.health_probe``), then stay healthy for
    ``settle`` s. The probe loop is the minion module's (``saltcd.wait_healthy``).

    .. code-block:: yaml

        saltcd-gate:
          saltcd_health.passing:
            - name: tcp://127.0.0.1:6379
            - container: redis
            - check: tcp
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    if __opts__["test"]:
        ret["result"] = None
        what = f"{name} to answer {status}" if check == "http" else f"{container or name} to pass its {check} check"
        ret["comment"] = f"Would wait up to {timeout}s for {what}"
        return ret
    # The probe loop is the minion module's (saltcd.wait_healthy): the
    # start-first state gates a new container with the very same loop.
    gate = __salt__["saltcd.wait_healthy"](name, container=container, timeout=timeout,
                                           interval=interval, settle=settle, status=status, check=check,
                                           command=command)
    ret["result"] = gate["healthy"]
    ret["comment"] = gate["comment"]
    return ret
