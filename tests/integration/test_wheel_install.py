"""pip alone: saltcd's wheel, installed non-editable into a fresh virtualenv, runs
a Salt master and minion from that virtualenv with nothing but the master.d file
`python -m saltcd.master_config` writes (and the user's `saltcd:` apps); a push
to the registry rolls out, and so does `salt-run deploy.rollout`. On the Salt
line this suite runs on (`make test-matrix` runs it on the oldest and the
newest): the venv gets that line's Salt, by its constraints file.

About a minute: the sdist and the wheel are built from a copy of the sources
(`python -m build`, ~20 s), the wheel installed with Salt into a fresh
virtualenv under /tmp/scd-whl-* (~30 s, from pip's local wheels; no
byte-compiling), then two daemons start (~10 s) and two rollouts run.
Everything under /tmp/scd-whl-* is removed at the end.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import yaml

import saltcd
from saltcd import compat, master_config
from sandbox import app_image, layout, loopback
from sandbox.registry import LocalRegistry
from tests import stale_runs
from tests.ports import free_port

pytestmark = pytest.mark.integration

# What the wheel is built from: the package and the repository's Salt folders.
SOURCES = ("pyproject.toml", "README.md", "CHANGELOG.md", "MANIFEST.in", "saltcd", "salt", "reactor", "orch",
           "_runners", "_engines", "_pillar", "_output")
# What is never shipped: the checkout's own tools.
NOT_SHIPPED = ("sandbox", "bench", "tests", "examples", "constraints", "docs")
MINION = "whl-1"
CONTAINER = "scd-whl-app"


@pytest.fixture(scope="module")
def work_dir(swept):
    path = stale_runs.session_folder("scd-whl-")  # in /tmp: short, for unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dist(work_dir, repo_root):
    """The sdist and the wheel (`python -m build`), built from a clean copy (no
    stale build/ or egg-info of the checkout, nothing but what it ships)."""
    src = work_dir / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        origin = repo_root / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(origin, src / name)
    _run([sys.executable, "-m", "build", "--outdir", str(work_dir / "dist"), str(src)], timeout=600)
    (sdist,) = (work_dir / "dist").glob("saltcd-*.tar.gz")
    (wheel,) = (work_dir / "dist").glob("saltcd-*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def wheel(dist):
    return dist["wheel"]


@pytest.fixture(scope="module")
def venv(work_dir, wheel, repo_root):
    """A fresh virtualenv with the wheel and its dependencies (Salt included)."""
    path = work_dir / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], timeout=120)
    constraints = repo_root / "constraints" / f"salt-{compat.LINE}.txt"
    _run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install", "-q",
          "--no-compile", "-c", str(constraints), str(wheel)], timeout=600)
    return path


def test_wheel_holds_only_what_runs_on_a_master_or_minion(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"saltcd", f"saltcd-{saltcd.__version__}.dist-info"}, tops
    for shipped in ("saltcd/files/salt/saltcd/deploy.sls", "saltcd/files/salt/orch/deploy.sls",
                    "saltcd/files/salt/_modules/saltcd.py", "saltcd/files/salt/_states/saltcd_health.py",
                    "saltcd/files/reactor/registry_push.sls", "saltcd/files/reactor/ci_push.sls",
                    "saltcd/files/_runners/deploy.py", "saltcd/files/_engines/saltcd_drains.py",
                    "saltcd/files/_pillar/saltcd.py", "saltcd/files/_output/saltcd_out.py",
                    "saltcd/files/_engines/saltcd_notify.py", "saltcd/files/salt/saltcd/pull.sls",
                    "saltcd/files/salt/_states/saltcd_release.py", "saltcd/files/salt/saltcd/gate.sls",
                    "saltcd/files/salt/_modules/saltcd_haproxy.py", "saltcd/files/salt/_utils/saltcd_minion.py",
                    "saltcd/files/salt/_utils/saltcd_references.py"):
        assert shipped in names, shipped
    # Shipped once: orch/ only inside the state tree.
    assert [n for n in names if n.endswith("orch/deploy.sls")] == ["saltcd/files/salt/orch/deploy.sls"]
    entry_points = zipfile.ZipFile(wheel).read(f"saltcd-{saltcd.__version__}.dist-info/entry_points.txt").decode()
    assert "[salt.loader]" in entry_points and "saltcd.master.extension:loader_dirs" in entry_points


def test_the_sdist_holds_the_sources_of_what_ships_and_the_changelog(dist):
    """`python -m build`: one version (saltcd.__version__) in both names, the Salt
    folders and the changelog in the sdist, none of the checkout's tools."""
    assert dist["sdist"].name == f"saltcd-{saltcd.__version__}.tar.gz"
    assert dist["wheel"].name == f"saltcd-{saltcd.__version__}-py3-none-any.whl"
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for shipped in ("pyproject.toml", "README.md", "CHANGELOG.md", "saltcd/compat.py", "salt/saltcd/deploy.sls",
                    "salt/saltcd/gate.sls", "salt/_modules/saltcd.py", "reactor/registry_push.sls",
                    "_runners/deploy.py", "_engines/saltcd_webhook.py", "_pillar/saltcd.py"):
        assert shipped in names, shipped
    assert not {n.split("/")[0] for n in names} & set(NOT_SHIPPED), sorted(names)


def test_push_rolls_out_from_a_pip_installed_master(lab_root, docker_hosts, venv, work_dir, repo_root,
                                                    webhook_token):
    builder = docker_hosts["builder"]
    bin_dir = venv / "bin"
    ports = {"publish": free_port(), "ret": free_port(), "webhook": free_port(), "app": free_port()}
    registry = LocalRegistry(
        work_dir / "registry", port=free_port(),
        notify_url=f"http://127.0.0.1:{ports['webhook']}/{master_config.REGISTRY_HOOK_PATH}",
        notify_headers=layout.notify_headers(webhook_token))
    repository = f"{registry.host}/saltcd/whl"

    # What an operator runs on the master: the generated wiring, from the venv's Python.
    conf_dir = work_dir / "etc" / "master"
    (conf_dir / "master.d").mkdir(parents=True)
    generated = _run([str(bin_dir / "python"), "-m", "saltcd.master_config",
                      "--webhook-port", str(ports["webhook"])], cwd=work_dir).stdout
    (conf_dir / "master.d" / "saltcd.conf").write_text(generated)
    wiring = yaml.safe_load(generated)
    assert not {"runner_dirs", "engines_dirs"} & set(wiring)
    tree = Path(wiring["file_roots"]["base"][0])
    assert tree.is_relative_to(venv) and "site-packages/saltcd/files" in str(tree), tree

    app = layout.app_config(repository, ports["app"], container=CONTAINER, health_timeout=20, settle=0,
                            state_timeout=60)
    app["environments"] = {"dev": {"target": MINION, "tgt_type": "list"}}
    _write_yaml(conf_dir / "master", {
        **_daemon_paths(work_dir, "master"),
        "interface": "127.0.0.1", "publish_port": ports["publish"], "ret_port": ports["ret"],
        "saltcd": layout.saltcd_config(registry.host, {"whl": app}, webhook_token),
    })
    minion_dir = work_dir / "etc" / "minion"
    minion_dir.mkdir(parents=True)
    _write_yaml(minion_dir / "minion", {
        **_daemon_paths(work_dir, MINION),
        "id": MINION, "master": "127.0.0.1", "master_port": ports["ret"],
        "acceptance_wait_time": 1, "random_reauth_delay": 0, "enable_fqdns_grains": False,
        **layout.minion_overrides({"env": "dev", "address": builder.address}, builder.url),
    })

    daemons = []
    try:
        daemons.append(_spawn(bin_dir / "salt-master", conf_dir, work_dir / "log" / "master.out"))
        _wait_for_port(ports["ret"], daemons[0], work_dir)
        daemons.append(_spawn(bin_dir / "salt-minion", minion_dir, work_dir / "log" / "minion.out"))
        _accept_key(bin_dir, conf_dir)
        _wait_for_ping(bin_dir, conf_dir)
        registry.start()

        # A push deploys: registry -> webhook engine -> reactor -> deploy.accept -> drain engine.
        digest = app_image.build_and_push(builder.url, repository, "dev", "1.0.0")
        _wait_until_serving(builder, digest, ports["app"], work_dir)
        newest = _history(bin_dir, conf_dir)[0]
        assert newest["trigger"]["kind"] == "registry", newest
        assert newest["status"] == "succeeded" and newest["to_digest"] == digest, newest

        # An operator's rollout puts a removed container back, from salt-run of the venv.
        _remove_container(builder)
        run = _run([str(bin_dir / "salt-run"), "-c", str(conf_dir), "deploy.rollout", "app=whl", "env=dev"],
                   timeout=180, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        _wait_until_serving(builder, digest, ports["app"], work_dir, timeout=10)
        newest = _history(bin_dir, conf_dir)[0]
        assert newest["trigger"]["kind"] != "registry" and newest["status"] == "succeeded", newest
    finally:
        for proc in reversed(daemons):
            _stop(proc)
        registry.stop()
        _remove_container(builder)


# -- helpers -------------------------------------------------------------------

def _run(argv, timeout=60, check=True, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv[:4]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _write_yaml(path, data):
    path.write_text(yaml.safe_dump(data, default_flow_style=False))


def _daemon_paths(work_dir, name):
    return {
        "user": "root",
        "root_dir": str(work_dir),
        "pki_dir": str(work_dir / "pki" / name),
        "cachedir": str(work_dir / "cache" / name),
        "extension_modules": str(work_dir / "cache" / name / "extmods"),
        "sock_dir": str(work_dir / "run" / name),
        "pidfile": str(work_dir / "run" / f"{name}.pid"),
        "log_file": str(work_dir / "log" / f"{name}.log"),
        "key_logfile": str(work_dir / "log" / f"{name}-key.log"),
        "log_level": "warning",
        "log_level_logfile": "info",
    }


def _spawn(program, conf_dir, out_file):
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "ab") as out:
        # A session of its own: stopping it stops the daemon's worker processes too.
        return subprocess.Popen([str(program), "-c", str(conf_dir)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def _stop(proc, timeout=20):
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _log_tail(work_dir, name="master", lines=40):
    path = work_dir / "log" / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_for_port(port, proc, work_dir, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"salt-master exited:\n{_log_tail(work_dir)}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"salt-master did not listen on {port} within {timeout}s")


def _accept_key(bin_dir, conf_dir, timeout=60):
    """`salt-key -a whl-1` once the minion has sent its key."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = json.loads(_run([bin_dir / "salt-key", "-c", conf_dir, "-L", "--out=json"]).stdout)
        if MINION in listed.get("minions", []):
            return
        if MINION in listed.get("minions_pre", []):
            _run([bin_dir / "salt-key", "-c", conf_dir, "-y", "-a", MINION])
            continue
        time.sleep(1)
    raise AssertionError(f"{MINION}'s key did not arrive within {timeout}s")


def _wait_for_ping(bin_dir, conf_dir, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ret = _run([bin_dir / "salt", "-c", conf_dir, "--out=json", "-t", "5", MINION, "test.ping"],
                   check=False)
        if ret.returncode == 0 and '"whl-1": true' in ret.stdout:
            return
        time.sleep(1)
    raise AssertionError(f"{MINION} did not answer test.ping within {timeout}s")


def _history(bin_dir, conf_dir):
    ret = _run([bin_dir / "salt-run", "-c", conf_dir, "--out=json", "deploy.history", "app=whl", "env=dev",
                "limit=5"], timeout=60)
    return json.loads(ret.stdout)


def _running_image(host):
    client = host.client()
    try:
        found = [c for c in client.containers.list() if c.name == CONTAINER]
        return found[0].attrs["Config"]["Image"] if found else None
    finally:
        client.close()


def _health(host, port):
    """The app's health URL on the lab's builder engine, where it publishes ports."""
    return loopback.status(f"http://{host.address}:{port}/health")


def _wait_until_serving(host, digest, port, work_dir, timeout=120):
    """The container runs exactly the pushed digest and its health URL answers 200."""
    deadline = time.monotonic() + timeout
    image = None
    while time.monotonic() < deadline:
        image = _running_image(host)
        if image and image.endswith(f"@{digest}") and _health(host, port) == 200:
            return
        time.sleep(1)
    raise AssertionError(f"{CONTAINER} runs {image!r}, not @{digest} answering 200, after {timeout}s:\n"
                         f"{_log_tail(work_dir)}")


def _remove_container(host):
    client = host.client()
    try:
        for container in client.containers.list(all=True):
            if container.name == CONTAINER:
                container.remove(force=True)
    finally:
        client.close()
