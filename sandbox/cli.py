"""python -m sandbox up|down|demo: the whole saltcd path on one machine.

`up` starts a registry on 127.0.0.1:5000 that notifies the master's webhook
engine, one private dockerd per minion (127.0.0.11..19) plus a builder engine
(127.0.0.10), a Salt master with saltcd wired in, and 10 minions (dev-1..3,
qa-1..3, prod-1..3, ci-1). It writes .sandbox/sandbox.json describing all of
it. `down` stops exactly that and removes .sandbox; `demo` runs up, the demo
scenario, then down. Loopback only; needs root.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import secrets
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from saltcd import master_config, vocabulary
from sandbox import layout, processes, tls
from sandbox.docker_hosts import DockerHost
from sandbox.proxy import HostProxy
from sandbox.registry import LocalRegistry
from sandbox.salt_daemons import SaltDaemons, port_in_use, salt_binary
from sandbox.token_server import TokenServerProcess

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
REGISTRY_PORT = 5000
REGISTRY_HOST = f"{LOOPBACK}:{REGISTRY_PORT}"
WEBHOOK_PORT = vocabulary.WEBHOOK_PORT
WEBHOOK_URL = f"http://{LOOPBACK}:{WEBHOOK_PORT}/{master_config.REGISTRY_HOOK_PATH}"
FLEET = {"dev": 3, "qa": 3, "prod": 3}
# SANDBOX_DEV=30: a larger dev environment for the scale bench (qa and prod stay 3).
MAX_DEV = 60
BUILDER = {"id": "builder", "address": "127.0.0.10", "index": 10}
CI_MINION = "ci-1"
APP = {"name": "web", "repository": f"{REGISTRY_HOST}/saltcd/web", "port": 8080}
START_TIMEOUT = 120
# Only manifest pushes are deploy triggers: the registry need not POST blob
# uploads nor every pull a minion makes (each would be one more reaction).
NOTIFY_IGNORE = {"actions": ["pull"], "mediatypes": ["application/octet-stream"]}
# SANDBOX_REGISTRY=token: the registry speaks TLS (a CA of the sandbox's own)
# and token auth, with a token server on this port; default: plain HTTP, no auth.
REGISTRY_MODES = ("plain", "token")
TOKEN_PORT = 5001
TOKEN_SERVICE = "saltcd-sandbox-registry"
TOKEN_ISSUER = "saltcd-sandbox-token-server"
# The builder pushes; saltcd and the minions only pull.
REGISTRY_USERS = {"pusher": ("pull", "push"), "deployer": ("pull",)}


def fleet_counts(state_file: Path) -> dict:
    """FLEET, with $SANDBOX_DEV dev minions; a sandbox that exists keeps the fleet it
    was made with (so that `down` without the variable still stops all of it)."""
    try:
        minions = json.loads(state_file.read_text())["minions"]
        return {env: sum(1 for m in minions if m["env"] == env) for env in layout.ENVIRONMENTS}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    dev = os.environ.get("SANDBOX_DEV", "").strip()
    if not dev:
        return dict(FLEET)
    if not dev.isdigit() or not 1 <= int(dev) <= MAX_DEV:
        raise SandboxError(f"SANDBOX_DEV must be a count of 1-{MAX_DEV}, got {dev!r}")
    return {**FLEET, "dev": int(dev)}


def registry_mode() -> str:
    """`plain` or `token`, from $SANDBOX_REGISTRY (make sandbox / make demo pass it through)."""
    mode = os.environ.get("SANDBOX_REGISTRY", "").strip() or "plain"
    if mode not in REGISTRY_MODES:
        raise SandboxError(f"SANDBOX_REGISTRY must be one of {', '.join(REGISTRY_MODES)}, got {mode!r}")
    return mode


class SandboxError(RuntimeError):
    """The sandbox cannot be started (prerequisite missing, port taken, daemon failed)."""


def say(text: str) -> None:
    """One line of progress for the user, at once."""
    print(text, flush=True)


def run_parallel(function, items) -> None:
    """Call function(item) for every item in threads; re-raise the first failure."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        futures = [pool.submit(function, item) for item in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


class Sandbox:
    """The sandbox of one checkout: every part, and its state file."""

    def __init__(self, repo_root: Path | str = REPO_ROOT, mode: str = "plain"):
        self.repo_root = Path(repo_root).resolve()
        self.mode = mode
        self.root = self.repo_root / ".sandbox"
        self.state_file = self.root / "sandbox.json"
        self.fleet = layout.fleet(fleet_counts(self.state_file))
        self.hosts = {m["id"]: DockerHost(m["id"], m["address"], self.root / "hosts" / m["id"], m["index"])
                      for m in [*self.fleet, BUILDER]}
        # One HAProxy per minion host: start-first apps switch through it.
        self.proxies = {m["id"]: HostProxy(m["id"], m["address"], self.root / "proxies" / m["id"])
                        for m in self.fleet}
        self.token_file = self.root / "webhook.token"
        self.webhook_token = self._secret(self.token_file)
        self.push_secret_file = self.root / "push.secret"
        self.push_secret = self._secret(self.push_secret_file)
        # Token mode: paths only here; `up` makes the CA, certificates and token server.
        self.tls_dir = self.root / "tls"
        self.ca = tls.CA(self.tls_dir / "ca.pem", self.tls_dir / "ca-key.pem")
        self.token_dir = self.root / "token-server"
        self.users_file = self.root / "registry-users.json"
        self.push_auth_file = self.root / "registry-push-auth.json"
        self.registry_passwords = self._passwords()
        self.registry = LocalRegistry(self.root / "registry", LOOPBACK, REGISTRY_PORT, notify_url=WEBHOOK_URL,
                                      notify_headers=layout.notify_headers(self.webhook_token),
                                      notify_ignore=NOTIFY_IGNORE, **self._registry_security())
        self.salt = SaltDaemons(self.root / "salt", self.master_settings(), self.minion_overrides(),
                                self.minion_environ())

    # -- configuration -------------------------------------------------------

    @staticmethod
    def _secret(path: Path) -> str:
        """A sandbox secret: kept in .sandbox (0600) while the sandbox lives."""
        try:
            return path.read_text(encoding="ascii").strip()
        except OSError:
            return secrets.token_urlsafe(24)

    def save_secrets(self) -> None:
        """The webhook token and the push secret, for scripts that talk to the sandbox
        (and in token mode the registry users' passwords and the pusher's credentials)."""
        files = [(self.token_file, self.webhook_token), (self.push_secret_file, self.push_secret)]
        if self.mode == "token":
            files.append((self.users_file, json.dumps(self.registry_passwords)))
            files.append((self.push_auth_file, json.dumps(self.registry_credentials("pusher"))))
        for path, value in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(value, encoding="ascii")

    # -- token mode ----------------------------------------------------------

    def _passwords(self) -> dict:
        """{user: password} of the registry users, kept in .sandbox while it lives."""
        try:
            return json.loads(self.users_file.read_text())
        except (OSError, ValueError):
            return {user: secrets.token_urlsafe(16) for user in REGISTRY_USERS}

    def registry_credentials(self, user: str) -> dict:
        return {"username": user, "password": self.registry_passwords[user]}

    def _registry_security(self) -> dict:
        """LocalRegistry arguments: TLS and token auth in token mode, nothing in plain mode."""
        if self.mode != "token":
            return {}
        return {
            "tls_cert": self.tls_dir / "registry.pem", "tls_key": self.tls_dir / "registry-key.pem",
            "ca_file": self.ca.cert_path,
            "token_auth": {"realm": f"https://{LOOPBACK}:{TOKEN_PORT}/token", "service": TOKEN_SERVICE,
                           "issuer": TOKEN_ISSUER, "rootcertbundle": self.token_dir / "token-server.pem"},
        }

    def token_server(self) -> TokenServerProcess:
        """The token server process (issues its certificate from the CA if it has none)."""
        users = {user: {"password": self.registry_passwords[user], "actions": list(actions)}
                 for user, actions in REGISTRY_USERS.items()}
        return TokenServerProcess(self.token_dir, self.ca, users, port=TOKEN_PORT, address=LOOPBACK,
                                  service=TOKEN_SERVICE, issuer=TOKEN_ISSUER, expires_in=300)

    def make_certificates(self) -> None:
        """The sandbox CA and the registry's certificate (the token server makes its own)."""
        tls.make_ca(self.tls_dir, "saltcd sandbox CA")  # writes self.ca's paths
        tls.issue(self.ca, self.tls_dir, "registry", hosts=[LOOPBACK, "localhost"])

    @functools.cached_property
    def saltcd_section(self) -> dict:
        """The `saltcd:` master config: app web, one rollout policy per environment
        (built once: the fleet and the secrets are fixed when the sandbox is made)."""
        app = layout.app_config(APP["repository"], APP["port"])
        app["environments"]["qa"]["batch"] = "50%"
        app["environments"]["prod"]["batch"] = [1, "100%"]  # a canary, then the rest
        # prod replaces start-first behind each host's HAProxy: no request lost (the demo counts them).
        app["environments"]["prod"]["strategy"] = "start-first"
        apps = {APP["name"]: app, "shop": layout.shop_app(REGISTRY_HOST), **self.bench_apps}
        section = layout.saltcd_config(REGISTRY_HOST, apps, self.webhook_token,
                                       ci_minions=(CI_MINION,), push_secret=self.push_secret)
        # The bench's throttling proxy in front of the registry (bench/throttle.py).
        section["registries"][layout.THROTTLED_REGISTRY] = {"scheme": "http", "timeout": 5}
        if self.mode == "token":
            section["registries"] = {REGISTRY_HOST: {"scheme": "https", "ca_file": str(self.ca.cert_path),
                                                     "timeout": 5, **self.registry_credentials("deployer")}}
        return section

    def batch_specs(self) -> dict:
        """{env: batch spec} of the web app (for the demo's expectations)."""
        web = self.saltcd_section["apps"][APP["name"]]
        return {env: spec.get("batch", web["batch"]) for env, spec in web["environments"].items()}

    @functools.cached_property
    def bench_apps(self) -> dict:
        """The apps `make bench` deploys (nothing runs until it pushes them)."""
        return layout.bench_apps(REGISTRY_HOST, [m["id"] for m in self.fleet])

    def master_settings(self) -> dict:
        """Everything the master needs besides its paths: saltcd's wiring and apps,
        and the benchmark's state tree (the naive orchestration it compares with)."""
        settings = master_config.wiring(webhook_address=LOOPBACK, webhook_port=WEBHOOK_PORT)
        settings["file_roots"]["base"].append(str(self.repo_root / "bench" / "salt"))
        # The operator's own states of the examples (the demo's accessory, myteam.kv).
        settings["file_roots"]["base"].append(str(self.repo_root / "examples" / "salt"))
        return {**settings, "saltcd": self.saltcd_section}

    def minion_overrides(self) -> dict:
        """{minion id: config overrides}: each fleet minion drives its own engine."""
        overrides = {m["id"]: layout.minion_overrides(m, self.hosts[m["id"]].url, self.proxies[m["id"]])
                     for m in self.fleet}
        if self.mode == "token":
            # Pull-only credentials; the deploy state logs in with them (docker.login).
            for conf in overrides.values():
                conf["docker-registries"] = {REGISTRY_HOST: self.registry_credentials("deployer")}
        overrides[CI_MINION] = {"grains": {"saltcd_role": "ci"}}  # no docker: it only fires events
        return overrides

    def minion_environ(self) -> dict:
        """{minion id: environment}: its own docker CLI config folder (`docker login`
        writes there; all minions are root with one HOME) and its engine for the CLI."""
        return {m["id"]: {"DOCKER_CONFIG": str(self.root / "docker-config" / m["id"]),
                          "DOCKER_HOST": self.hosts[m["id"]].url} for m in self.fleet}

    def describe(self) -> dict:
        """The sandbox.json content (without pids)."""
        token = {"registry_ca_file": str(self.ca.cert_path),
                 "registry_push_auth_file": str(self.push_auth_file),
                 "token_realm": self._registry_security()["token_auth"]["realm"]} if self.mode == "token" else {}
        return {
            "registry": REGISTRY_HOST,
            "registry_url": self.registry.url,
            "registry_mode": self.mode,
            **token,
            "master_config_dir": str(self.salt.conf_dir),
            "master_config_file": str(self.salt.master_conf_file),
            "salt_bin_dir": str(Path(sys.executable).parent),
            "webhook_url": WEBHOOK_URL,
            "webhook_token_file": str(self.token_file),
            "push_secret_file": str(self.push_secret_file),
            "ci_minion": CI_MINION,
            "build_docker_host": self.hosts[BUILDER["id"]].url,
            "minions": [{"id": m["id"], "env": m["env"], "docker_host": self.hosts[m["id"]].url,
                         "address": m["address"]} for m in self.fleet],
            "apps": [{
                "name": APP["name"],
                "repository": APP["repository"],
                "container": APP["name"],
                "container_port": 8080,
                "host_port": APP["port"],
                "batch": self.batch_specs(),
                "health_urls": {m["id"]: f"http://{m['address']}:{APP['port']}/health" for m in self.fleet},
                "version_urls": {m["id"]: f"http://{m['address']}:{APP['port']}/version" for m in self.fleet},
            }],
            "shop": {"repository": f"{REGISTRY_HOST}/saltcd/shop", "kv_repository": f"{REGISTRY_HOST}/saltcd/kv",
                     "containers": ["shop-web", "shop-worker"],
                     "health_urls": {m["id"]: f"http://{m['address']}:{layout.SHOP_PORT}/health"
                                     for m in self.fleet if m["env"] == "dev"}},
            "bench_apps": self.bench_apps,
            "logs": str(self.salt.log_dir),
        }

    # -- state file ----------------------------------------------------------

    def read_state(self) -> dict:
        """sandbox.json, or {} when there is none (or it is unreadable)."""
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, status: str, pids: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.describe(), "status": status, "pids": pids}, indent=2) + "\n")
        tmp.replace(self.state_file)

    def is_up(self) -> bool:
        """True if the state says up and its master is still alive."""
        state = self.read_state()
        master = (state.get("pids") or {}).get("salt", {}).get("master")
        return state.get("status") == "up" and bool(master) and self.salt.is_ours(master)

    # -- up ------------------------------------------------------------------

    def check_prerequisites(self) -> None:
        """Root, the programs, and free ports: fail before starting anything."""
        if os.geteuid() != 0:
            raise SandboxError("the sandbox starts dockerd and creates bridges: run it as root")
        for program in ("dockerd", "docker-registry", "ip", "haproxy"):
            if not shutil.which(program):
                raise SandboxError(f"{program} is not installed (Debian: docker.io, docker-registry, iproute2, "
                                   "haproxy; scripts/bootstrap-system.sh installs them)")
        if not Path("/bin/busybox").exists():
            raise SandboxError("/bin/busybox is missing (Debian: busybox-static)")
        for program in ("salt-master", "salt-minion", "salt-run"):
            salt_binary(program)
        ports = (REGISTRY_PORT, WEBHOOK_PORT, *((TOKEN_PORT,) if self.mode == "token" else ()))
        taken = [f"{LOOPBACK}:{port}" for port in ports if port_in_use(LOOPBACK, port)]
        taken += [f"{m['address']}:{port}" for m in self.fleet for port in (APP["port"], layout.SHOP_PORT)
                  if port_in_use(m["address"], port)]
        if taken:
            raise SandboxError(f"already in use: {', '.join(taken)} (another sandbox? run `down` first)")
        self.salt.check_ports()

    def up(self) -> dict:
        """Start every part, in order, and return the state written to sandbox.json."""
        started = time.monotonic()
        self.check_prerequisites()
        pids = {"dockerd": {}, "registry": None, "token_server": None, "salt": {}}
        self._write_state("starting", pids)  # from here on, `down` knows what to clean
        self.save_secrets()
        say(f"starting {len(self.hosts)} docker engines ({', '.join(self.hosts)})")
        run_parallel(lambda host: host.start(timeout=START_TIMEOUT), self.hosts.values())
        pids["dockerd"] = {name: host.pid for name, host in self.hosts.items()}
        say(f"starting {len(self.proxies)} HAProxy instances (one per minion host)")
        run_parallel(lambda proxy: proxy.start(), self.proxies.values())
        pids["haproxy"] = {name: proxy.pid for name, proxy in self.proxies.items()}
        if self.mode == "token":
            self.make_certificates()
            server = self.token_server()
            say(f"starting the token server on {server.realm}")
            server.start()
            pids["token_server"] = server.pid
            self._write_state("starting", pids)
        say(f"starting the registry on {self.registry.url} (notifies {WEBHOOK_URL})")
        self.registry.start()
        pids["registry"] = self.registry.pid
        self._write_state("starting", pids)
        say(f"starting salt-master and {len(self.salt.minions)} minions (config in {self.salt.conf_dir})")
        try:
            self.salt.start(START_TIMEOUT, wait_ports=(WEBHOOK_PORT,))
        finally:
            pids["salt"] = self.salt.pids()
            self._write_state("starting", pids)
        self._write_state("up", pids)
        say(f"sandbox up in {time.monotonic() - started:.1f} s; state in {self.state_file}")
        return self.read_state()

    # -- down ----------------------------------------------------------------

    def down(self) -> None:
        """Stop what `up` started (also after a crashed `up`) and remove .sandbox. Idempotent."""
        state = self.read_state()
        pids = state.get("pids") or {}
        stopped = self.salt.stop(pids.get("salt"))
        say(f"stopped {len(stopped)} Salt process(es)")
        self.registry.stop()
        # Whatever mode `up` ran in: a token server serving our config goes too.
        TokenServerProcess.stop_serving(self.token_dir / "token-server.json")
        run_parallel(lambda proxy: proxy.stop(), self.proxies.values())
        run_parallel(lambda host: host.purge(), self.hosts.values())
        say(f"stopped the registry, {len(self.proxies)} HAProxy instances and purged "
            f"{len(self.hosts)} docker engines")
        self._remove_root()

    def _remove_root(self) -> None:
        """Delete .sandbox, unless something is still mounted below it."""
        if not self.root.exists():
            return
        processes.unmount_below([self.root])
        still = [m for m in processes.mount_points() if m.startswith(f"{self.root}/")]
        if still:
            raise SandboxError(f"not removing {self.root}: still mounted: {still}")
        shutil.rmtree(self.root)


# -- commands ----------------------------------------------------------------


def cmd_up(sandbox: Sandbox, args) -> int:
    """Start the sandbox (cleaning whatever a previous run left) and say how to use it."""
    if sandbox.is_up():
        say(f"the sandbox is already up ({sandbox.state_file}); `down` stops it")
        return 0
    if sandbox.root.exists():
        say(f"cleaning up what a previous sandbox left in {sandbox.root}")
        sandbox.down()
    try:
        state = sandbox.up()
    except Exception as exc:  # pylint: disable=broad-except
        say(f"sandbox up FAILED: {exc}")
        if sandbox.root.exists():
            say(f"logs are in {sandbox.root}; `python -m sandbox down` cleans up")
        return 1
    _print_usage(state)
    return 0


def _print_usage(state: dict) -> None:
    conf = state["master_config_dir"]
    bin_dir = state["salt_bin_dir"]
    say("try:")
    say(f"  {bin_dir}/salt -c {conf} '*' test.ping")
    say(f"  {bin_dir}/salt-run -c {conf} deploy.status")
    say(f"  {bin_dir}/salt-run -c {conf} deploy.rollout app=web env=dev test=True")


def cmd_down(sandbox: Sandbox, args) -> int:
    """Stop everything the sandbox started and remove .sandbox."""
    sandbox.down()
    say("sandbox down")
    return 0


def cmd_demo(sandbox: Sandbox, args) -> int:
    """up, the demo scenario, down (unless --keep); 0 only if every expectation held."""
    from sandbox import demo  # pylint: disable=import-outside-toplevel

    started = time.monotonic()
    if sandbox.root.exists():
        say(f"the demo starts from scratch: removing the sandbox in {sandbox.root}")
        sandbox.down()
    ok = False
    try:
        state = sandbox.up()
        ok = demo.run(state)
    except Exception as exc:  # pylint: disable=broad-except
        log.debug("demo failed", exc_info=True)
        say(f"demo FAILED: {type(exc).__name__}: {exc}")
        say(sandbox.salt.log_tail("master"))
    finally:
        if args.keep:
            say("--keep: the sandbox stays up; `python -m sandbox down` stops it")
            if sandbox.state_file.exists():
                _print_usage(sandbox.read_state())
        else:
            say("stopping the sandbox")
            sandbox.down()
    say(f"demo {'PASSED' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


def parser() -> argparse.ArgumentParser:
    """The command line: up, down, demo [--keep]."""
    top = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--repo", default=str(REPO_ROOT), help="the saltcd checkout (state goes to REPO/.sandbox)")
    top.add_argument("-v", "--verbose", action="store_true", help="log what every part does")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the sandbox").set_defaults(func=cmd_up)
    commands.add_parser("down", help="stop it and remove .sandbox").set_defaults(func=cmd_down)
    demo = commands.add_parser("demo", help="up, push images and watch them roll out, down")
    demo.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")
    demo.set_defaults(func=cmd_demo)
    return top


def main(argv=None) -> int:
    """Entry point of `python -m sandbox`."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sandbox = Sandbox(args.repo, registry_mode())
    except SandboxError as exc:
        say(f"{args.command} FAILED: {exc}")
        return 2
    try:
        return args.func(sandbox, args)
    except KeyboardInterrupt:
        say("interrupted: `python -m sandbox down` cleans up")
        return 130
    except Exception as exc:  # pylint: disable=broad-except
        log.debug("%s failed", args.command, exc_info=True)
        say(f"{args.command} FAILED: {type(exc).__name__}: {exc}")
        return 1
