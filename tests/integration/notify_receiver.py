"""The integration lab's notification endpoints (see tests/notify_receiver.py)."""

from tests.notify_receiver import Receiver
from tests.ports import free_port as closed_port


class Receivers:
    """The lab's endpoints: a good JSON one, a Slack-format one, one answering 500, a closed port."""

    SECRET = "notify-bearer-" + "x" * 16

    def __init__(self):
        self.json, self.slack, self.failing = Receiver(), Receiver(), Receiver(status=500)
        self.closed_url = f"http://127.0.0.1:{closed_port()}/hook"

    def config(self):
        # The good endpoint gets a long timeout: an answer that a busy machine
        # delays past it is retried, and the test counts each message once.
        return [
            {"url": self.json.url, "format": "json", "secret": self.SECRET, "timeout": 10, "retries": 1},
            {"url": self.slack.url, "format": "slack", "events": ["rolled_back", "failed"], "timeout": 2},
            {"url": self.failing.url, "timeout": 2, "retries": 2},
            {"url": self.closed_url, "timeout": 2, "retries": 2},
        ]

    def close(self):
        for receiver in (self.json, self.slack, self.failing):
            receiver.close()
