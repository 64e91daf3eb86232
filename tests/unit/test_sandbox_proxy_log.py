"""The sandbox HAProxy's request log, read for slow or failed requests."""

from sandbox.proxy import HostProxy

LINES = """\
[NOTICE]   (3683) : New worker (3701) forked
127.0.0.1:1 [27/Nov/2026:09:22:25] saltcd-web saltcd-web/b 0/0/0/1/2 200 165 - - ---- 1/1/0/0/0 0/0 "GET /version"
127.0.0.1:2 [27/Nov/2026:09:22:26] saltcd-web saltcd-web/a 0/0/2001/3/2004 200 165 - - ---- 1/1/0/0/1 0/0 "GET /version"
127.0.0.1:3 [27/Nov/2026:09:22:27] saltcd-web saltcd-web/a 0/0/-1/-1/6003 503 217 - - sC-- 1/1/0/0/3 0/0 "GET /version"
127.0.0.1:4 [27/Nov/2026:09:22:28] saltcd-web saltcd-web/b 0/0/0/2/2 200 165 - - ---- 1/1/0/0/0 0/0 "GET /health"
"""


def test_slow_requests_are_the_slow_and_the_failed_ones_not_haproxys_notices(tmp_path):
    proxy = HostProxy("dev-1", "127.0.0.11", tmp_path)
    proxy.logfile.write_text(LINES)
    assert [line.split()[0] for line in proxy.slow_requests()] == ["127.0.0.1:2", "127.0.0.1:3"]
    assert [line.split()[0] for line in proxy.slow_requests(over_ms=5000)] == ["127.0.0.1:3"]


def test_no_log_yet_means_nothing_slow(tmp_path):
    assert HostProxy("dev-1", "127.0.0.11", tmp_path).slow_requests() == []
