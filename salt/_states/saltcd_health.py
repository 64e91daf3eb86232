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

import time


def __virtual__():
    return "saltcd_health"


def _container_down(container):
    """A reason if `container` is known to have stopped, else None."""
    if not container:
        return None
    info = __salt__["saltcd.container"](container)
    if not info["exists"]:
        return f"container {container} does not exist"
    if not info["running"]:
        return f"container {container} exited with code {info.get('exit_code')}"
    return None


def passing(name, container=None, timeout=30, interval=1, settle=0, status=200):
    """
    Wait until ``name`` (a URL) answers ``status``, then stay healthy for ``settle`` s.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"Would wait up to {timeout}s for {name} to answer {status}"
        return ret
    started = time.monotonic()
    deadline = started + float(timeout)
    last = None
    healthy_at = None
    # Bounded: every iteration sleeps `interval`, and the loop ends at `deadline`
    # (or after `settle` once healthy).
    while True:
        down = _container_down(container)
        if down:
            ret["comment"] = f"Unhealthy: {down}"
            return ret
        last = __salt__["saltcd.probe"](name, timeout=min(float(interval) + 1, 5), status=status)
        now = time.monotonic()
        if last["healthy"]:
            healthy_at = healthy_at or now
            if now - healthy_at >= float(settle):
                ret["result"] = True
                ret["comment"] = (f"Healthy after {healthy_at - started:.1f}s"
                                  + (f", still healthy after {settle}s" if settle else ""))
                return ret
        elif healthy_at is not None:
            ret["comment"] = (f"Unhealthy: became unhealthy {now - healthy_at:.1f}s after "
                              f"first passing (status {last['status']}, {last['error']})")
            return ret
        elif now >= deadline:
            ret["comment"] = (f"Unhealthy: {name} did not answer {status} within {timeout}s "
                              f"(last: status {last['status']}, {last['error']})")
            return ret
        time.sleep(float(interval))
