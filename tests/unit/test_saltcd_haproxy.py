"""The pure parts of the minion's HAProxy client (salt/_utils/saltcd_haproxy.py,
through Salt's utils loader): the per-app config it writes, the commands it
sends, and how it reads HAProxy's tables."""

import pytest

from tests import salt_side


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory):
    return salt_side.minion(tmp_path_factory.mktemp("minion")).utils.saltcd_haproxy


# `show servers state saltcd-web` of HAProxy 2.6 (columns cut after srv_port):
# a live `a`, a drained `b`, and the never used placeholder.
HEADER = ("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
          "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
          "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port")
SERVERS_STATE = "1\n" + HEADER + """
3 saltcd-web 1 a 127.0.0.41 2 0 1 1 12 1 0 0 0 0 0 0 - 32768
3 saltcd-web 2 b 127.0.0.41 2 8 1 1 3 1 0 0 0 0 0 0 - 32771
"""
PLACEHOLDER_STATE = "1\n" + HEADER + """
3 saltcd-web 1 a 127.0.0.41 2 4 1 1 12 1 0 0 0 0 0 0 - 32768
3 saltcd-web 2 b 127.0.0.1 0 5 1 1 3 1 0 0 0 0 0 0 - 1
"""
STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,
saltcd-web,FRONTEND,,,3,5,262124,40,
saltcd-web,a,0,0,0,2,,20,
saltcd-web,b,0,0,2,3,,20,
saltcd-web,BACKEND,0,0,2,3,26213,40,
"""


def test_rendered_config_binds_the_public_address_and_retries_refused_connections(haproxy):
    text = haproxy.render("web", "127.0.0.41", 18080, {"b": "127.0.0.41:32771"})
    lines = [line.strip() for line in text.splitlines()]
    assert "frontend saltcd-web" in lines and "backend saltcd-web" in lines
    assert "bind 127.0.0.41:18080" in lines
    assert lines.count("mode http") == 2
    assert {"retries 3", "option redispatch 1", "retry-on conn-failure empty-response"} <= set(lines)
    assert "server a 127.0.0.1:1 disabled" in lines  # the idle slot waits in maintenance
    assert "server b 127.0.0.41:32771" in lines


def test_rendered_config_binds_every_address_by_default(haproxy):
    assert "    bind :8080\n" in haproxy.render("web", "", 8080, {"a": "127.0.0.1:40000"})


def test_slot_states_tell_the_live_slot_from_a_draining_one(haproxy):
    assert haproxy.slot_states(SERVERS_STATE) == {
        "a": {"address": "127.0.0.41:32768", "live": True},
        "b": {"address": "127.0.0.41:32771", "live": False}}


def test_a_server_enabled_after_disabled_in_the_config_is_live_and_the_placeholder_is_empty(haproxy):
    # 0x04 stays set on a server the config declared `disabled`, also once it is ready.
    assert haproxy.slot_states(PLACEHOLDER_STATE) == {
        "a": {"address": "127.0.0.41:32768", "live": True},
        "b": {"address": None, "live": False}}


def test_current_sessions_reads_scur_of_one_server(haproxy):
    assert haproxy.current_sessions(STAT, "saltcd-web", "b") == 2
    assert haproxy.current_sessions(STAT, "saltcd-web", "a") == 0
    assert haproxy.current_sessions(STAT, "saltcd-api", "a") is None


def test_set_address_command_splits_host_and_port(haproxy):
    assert (haproxy.set_address_command("saltcd-web", "b", "127.0.0.41:32771")
            == "set server saltcd-web/b addr 127.0.0.41 port 32771")
