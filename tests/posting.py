"""One HTTP POST as a registry or a CI job makes it, for the tests of the webhook."""

import urllib.error
import urllib.request


def post(url, body, headers=None):
    """(status, answer text) of one POST of `body` (bytes) to `url`."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
