"""Signed, fresh, once: `saltcd/push` signatures, the nonce cache, the timestamped
webhook HMAC, `python -m saltcd.ci_push`, and strict sdb secrets."""

import copy
import hashlib
import hmac
import json
import threading

import pytest
import salt.cache
import salt.config

from saltcd import ci_push, config
from saltcd.ingress import ingress_auth, intake, nonces
from saltcd.ingress.ingress_auth import Replay, Unauthenticated, check_push
from saltcd.master import wiring

from .conftest import RAW
from .fakes import MemoryCache

SECRET = "p" * 32
REPO = "127.0.0.1:5000/saltcd/web"
NOW = 1_800_000_000


@pytest.fixture
def cache():
    return nonces.NonceCache(MemoryCache())


def signed(**overrides):
    return ci_push.payload(REPO, "dev", SECRET, timestamp=overrides.pop("timestamp", NOW), **overrides)


# -- saltcd/push ------------------------------------------------------------------


def test_a_signed_push_passes_once(cache):
    payload = signed(digest="sha256:" + "a" * 64)
    check_push(SECRET, payload, NOW, cache, 300)
    with pytest.raises(Replay, match="replay: this push's nonce was seen before"):
        check_push(SECRET, payload, NOW + 1, cache, 300)


def test_without_a_push_secret_every_push_is_refused_with_how_to_configure(cache):
    with pytest.raises(Unauthenticated) as exc:
        check_push(None, signed(), NOW, cache, 300)
    assert "set `saltcd:push_secret`" in str(exc.value) and "python -m saltcd.ci_push" in str(exc.value)


@pytest.mark.parametrize("change, reason", [
    ({"signature": None}, "missing signature"),
    ({"signature": "sha256=" + "0" * 64}, "signature does not match the payload"),
    ({"repository": "127.0.0.1:5000/saltcd/api"}, "signature does not match the payload"),
    ({"tag": "prod"}, "signature does not match the payload"),
    ({"digest": "sha256:" + "b" * 64}, "signature does not match the payload"),
    ({"timestamp": NOW + 1}, "signature does not match the payload"),
    ({"nonce": "another-nonce-of-20-chars"}, "signature does not match the payload"),
    ({"timestamp": None}, "missing or invalid timestamp"),
    ({"timestamp": "yesterday"}, "missing or invalid timestamp"),
    ({"nonce": None}, "missing or invalid nonce"),
    ({"nonce": "short"}, "missing or invalid nonce"),
    ({"nonce": "../../etc/passwd-and-more"}, "missing or invalid nonce"),
])
def test_a_tampered_or_incomplete_push_is_refused(cache, change, reason):
    payload = {k: v for k, v in {**signed(), **change}.items() if v is not None}
    with pytest.raises(Unauthenticated, match=reason):
        check_push(SECRET, payload, NOW, cache, 300)
    assert cache.buckets() == []  # nothing unauthenticated is remembered


@pytest.mark.parametrize("age, reason", [(301, "301 s old"), (-301, "301 s in the future")])
def test_a_push_outside_the_window_is_a_replay(cache, age, reason):
    with pytest.raises(Replay, match=f"replay or clock skew: .*{reason} \\(push_window is 300 s\\)"):
        check_push(SECRET, signed(), NOW + age, cache, 300)
    check_push(SECRET, signed(), NOW + 299, cache, 300)  # inside: fine


def test_the_runner_compares_digests_of_signatures(cache):
    """What the reactor passes: the SHA-256 of the signature, never the signature."""
    payload = signed()
    handed = {k: v for k, v in payload.items() if k != "signature"}
    handed["signature_sha256"] = [hashlib.sha256(payload["signature"].encode()).hexdigest()]
    check_push(SECRET, handed, NOW, cache, 300)
    with pytest.raises(Unauthenticated, match="missing signature"):
        check_push(SECRET, {**handed, "signature_sha256": []}, NOW, cache, 300)
    with pytest.raises(Unauthenticated, match="does not match"):
        check_push(SECRET, {**handed, "signature_sha256": ["0" * 64]}, NOW, cache, 300)


def test_the_message_format_is_what_the_readme_says():
    expected = hmac.new(SECRET.encode(), f"saltcd-push-v2\n{REPO}\ndev\n\n{NOW}\nn0nce-n0nce-n0nce".encode(),
                        hashlib.sha256).hexdigest()
    assert signed(nonce="n0nce-n0nce-n0nce")["signature"] == f"sha256={expected}"


def test_intake_wrapped_and_unwrapped_reach_the_same_check(cache):
    settings = config.load({**copy.deepcopy(RAW), "push_secret": SECRET})
    wrapped = {"id": "ci-1", "cmd": "_minion_event", "data": signed()}
    verdict = intake.classify("saltcd/push", wrapped, settings, now=NOW, nonces=cache)
    assert verdict.rejected is None and verdict.requests[0]["env"] == "dev"
    # The same payload again: a replay from a CI minion, refused (and its nonce
    # not looked at) unwrapped, whether by a minion's events path or the master.
    verdict = intake.classify("saltcd/push", wrapped, settings, now=NOW, nonces=cache)
    assert verdict.rejected == "unauthenticated: replay: this push's nonce was seen before"
    for again in ({"id": None, "cmd": None, "data": wrapped["data"]}, dict(wrapped["data"])):
        verdict = intake.classify("saltcd/push", again, settings, now=NOW, nonces=cache)
        assert verdict.rejected == intake.UNWRAPPED and verdict.requests == []
    unsigned = {"repository": REPO, "tag": "dev"}
    for event in (unsigned, {"id": None, "cmd": None, "data": unsigned},
                  {"id": "ci-1", "cmd": "_minion_event", "data": unsigned}):
        verdict = intake.classify("saltcd/push", event, settings, now=NOW, nonces=cache)
        assert verdict.rejected.startswith("unauthenticated: missing signature"), verdict
        assert verdict.requests == []


def test_intake_without_a_push_secret_refuses_the_masters_own_event_too(cache):
    settings = config.load(copy.deepcopy(RAW))
    verdict = intake.classify("saltcd/push", {"repository": REPO, "tag": "dev"}, settings, now=NOW, nonces=cache)
    assert "no push_secret is configured for this push" in verdict.rejected and verdict.requests == []


# -- the nonce cache --------------------------------------------------------------


def test_nonces_are_pruned_by_whole_buckets(cache):
    assert cache.first_sighting("a" * 20, NOW, 300)
    assert not cache.first_sighting("a" * 20, NOW + 599, 300)  # a replay can still arrive
    assert len(cache.buckets()) == 1
    assert cache.first_sighting("b" * 20, NOW + 2 * 300 + 2 * nonces.BUCKET, 300)
    assert len(cache.buckets()) == 1  # the first bucket is gone


def test_a_forgotten_sighting_is_a_first_sighting_again(cache):
    assert cache.first_sighting("c" * 20, NOW, 300)
    cache.forget("c" * 20, NOW)
    assert cache.first_sighting("c" * 20, NOW + 1, 300)
    assert not cache.first_sighting("c" * 20, NOW + 2, 300)


def test_a_full_bucket_fails_closed(cache, monkeypatch):
    monkeypatch.setattr(nonces, "MAX_PER_BUCKET", 3)
    for i in range(3):
        check_push(SECRET, signed(nonce=f"nonce-number-{i:08d}"), NOW, cache, 300)
    with pytest.raises(Unauthenticated, match="refused: more than 3 signed payloads"):
        check_push(SECRET, signed(nonce="nonce-number-99999999"), NOW, cache, 300)


def test_concurrent_threads_accept_a_nonce_once(tmp_path):
    """Salt's localfs cache has no compare-and-swap; the flock closes the race."""
    opts = salt.config.master_config(None)
    opts.update({"cachedir": str(tmp_path / "cache"), "cache": "localfs"})
    firsts, barrier = [], threading.Barrier(16)

    def sight():
        seen = nonces.NonceCache(salt.cache.factory(opts), lock_dir=opts["cachedir"])
        barrier.wait()
        firsts.append(seen.first_sighting("the-same-nonce-0001", NOW, 300))

    threads = [threading.Thread(target=sight) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(firsts) == [False] * 15 + [True]
    assert (tmp_path / "cache" / "saltcd" / "locks" / "nonces.lock").exists()


# -- timestamped webhook HMAC ----------------------------------------------------


def _stamped_event(secret="hub-secret", timestamp=NOW, body=b'{"push_data": {"tag": "dev"}}', signed_ts=None):
    message = f"{timestamp if signed_ts is None else signed_ts}.".encode() + body
    signature = "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {"body": body, "timestamp": str(timestamp),
            **ingress_auth.hashed_headers({"X-Hub-Signature-256": signature})}


def test_timestamped_hmac_webhook():
    source = config.Source(name="hub", hmac_secret="hub-secret", timestamp_header="X-Timestamp")
    ingress_auth.check(source, _stamped_event(), now=NOW + 10, window=300)
    with pytest.raises(Replay, match="replay or clock skew: timestamp in X-Timestamp is 400 s old"):
        ingress_auth.check(source, _stamped_event(), now=NOW + 400, window=300)
    with pytest.raises(Unauthenticated, match="does not match the body"):  # a fresh time, an old MAC
        ingress_auth.check(source, _stamped_event(timestamp=NOW + 400, signed_ts=NOW), now=NOW + 400)
    no_time = {k: v for k, v in _stamped_event().items() if k != "timestamp"}
    with pytest.raises(Unauthenticated, match="missing timestamp header X-Timestamp"):
        ingress_auth.check(source, no_time, now=NOW)
    with pytest.raises(Unauthenticated, match="does not match the body"):  # the untimed form
        plain = hmac.new(b"hub-secret", no_time["body"], hashlib.sha256).hexdigest()
        ingress_auth.check(source, {**_stamped_event(), **ingress_auth.hashed_headers(
            {"X-Hub-Signature-256": f"sha256={plain}"})}, now=NOW)


# -- python -m saltcd.ci_push ----------------------------------------------------


def test_ci_push_cli_reads_the_secret_from_a_file(tmp_path, capsys, cache):
    secret_file = tmp_path / "push.secret"
    secret_file.write_text(SECRET + "\n")
    ci_push.main(["--repository", REPO, "--tag", "qa", "--secret-file", str(secret_file)])
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"repository", "tag", "timestamp", "nonce", "signature"}
    check_push(SECRET, payload, payload["timestamp"], cache, 300)
    with pytest.raises(SystemExit):
        ci_push.main(["--repository", REPO, "--tag", "qa"])  # no secret, no payload


# -- strict sdb ------------------------------------------------------------------


@pytest.fixture
def master_opts(tmp_path):
    opts = salt.config.master_config(None)
    (tmp_path / "secrets.yaml").write_text(
        "saltcd:\n  push: yaml-push-secret-0123456789\n  token: yaml-token\n  hmac: yaml-hmac\n"
        "  password: yaml-password\n")
    opts.update({"cachedir": str(tmp_path / "cache"), "extension_modules": str(tmp_path / "ext"),
                 "envsdb": {"driver": "env"},
                 "yamlsdb": {"driver": "yaml", "files": [str(tmp_path / "secrets.yaml")]}})
    return opts


SECRET_KEYS = [
    (("push_secret",), "saltcd:push_secret", "push", "SCD_PUSH", "env-push-secret-0123456789"),
    (("sources", "registry", "token"), "saltcd:sources:registry:token", "token", "SCD_TOKEN", "env-token"),
    (("sources", "hub", "hmac_secret"), "saltcd:sources:hub:hmac_secret", "hmac", "SCD_HMAC", "env-hmac"),
    (("registries", "127.0.0.1:5000", "password"), "saltcd:registries:127.0.0.1:5000:password",
     "password", "SCD_PASSWORD", "env-password"),
]


def _with(raw, path, value):
    raw = copy.deepcopy(raw)
    raw["registries"]["127.0.0.1:5000"]["username"] = "deployer"
    raw["registries"]["127.0.0.1:5000"].setdefault("password", "plain-password")
    node = raw
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    return raw


def _value(settings, path):
    if path[0] == "push_secret":
        return settings.push_secret
    if path[0] == "sources":
        return getattr(settings.sources[path[1]], path[2])
    return settings.registry(path[1]).password


@pytest.mark.parametrize("path, key, yaml_key, env_var, env_value", SECRET_KEYS,
                         ids=[k[1] for k in SECRET_KEYS])
def test_every_secret_may_come_from_sdb(master_opts, monkeypatch, path, key, yaml_key, env_var, env_value):
    monkeypatch.setenv(env_var, env_value)
    master_opts["saltcd"] = _with(RAW, path, f"sdb://envsdb/{env_var}")
    assert _value(wiring.settings(master_opts), path) == env_value
    master_opts["saltcd"] = _with(RAW, path, f"sdb://yamlsdb/saltcd:{yaml_key}")
    assert _value(wiring.settings(master_opts), path).startswith("yaml-")


@pytest.mark.parametrize("path, key, yaml_key, env_var, env_value", SECRET_KEYS,
                         ids=[k[1] for k in SECRET_KEYS])
def test_a_secret_that_does_not_resolve_is_a_config_error_naming_the_key(
        master_opts, path, key, yaml_key, env_var, env_value):
    for uri, why in ((f"sdb://vault/{env_var}", 'SDB profile "vault" wasnt found'),
                     ("sdb://envsdb/SCD_NOT_SET_ANYWHERE", "does not resolve to a non-empty string"),
                     ("sdb://yamlsdb/saltcd:nothing", "does not resolve to a non-empty string")):
        master_opts["saltcd"] = _with(RAW, path, uri)
        with pytest.raises(config.ConfigError) as exc:
            wiring.settings(master_opts)
        assert str(exc.value).startswith(f"{key}: {uri} does not resolve"), exc.value
        assert why in str(exc.value)
