"""Salt's loaders in-process, no daemons: a local-file minion and a master's runner client."""

import pytest
import salt.client
import salt.config
import salt.runner
import yaml

from saltcd import master_config


@pytest.fixture
def caller(tmp_path, repo_root):
    """A masterless minion that reads the repository's state tree."""
    opts = salt.config.minion_config(None)
    opts.update({
        "id": "dev-1",
        "file_client": "local",
        # The operator's own states of the examples beside saltcd's (apps.<app>.state).
        "file_roots": {"base": [str(repo_root / "salt"), str(repo_root / "examples" / "salt")]},
        "root_dir": str(tmp_path),
        "cachedir": str(tmp_path / "cache"),
        "pki_dir": str(tmp_path / "pki"),
        "sock_dir": str(tmp_path / "sock"),
        "extension_modules": str(tmp_path / "extmods"),
        # saltcd's minion utils, as a minion has them once synced (salt://_utils):
        # Salt's utils loader takes none from saltcd's `salt.loader` entry point.
        "utils_dirs": [str(repo_root / "salt" / "_utils")],
    })
    return salt.client.Caller(mopts=opts)


@pytest.fixture
def master_opts(tmp_path, repo_root):
    def build(saltcd):
        opts = salt.config.master_config(None)
        opts.update(master_config.wiring(repo_root))
        opts.update({
            "root_dir": str(tmp_path),
            "cachedir": str(tmp_path / "cache"),
            "pki_dir": str(tmp_path / "pki"),
            "sock_dir": str(tmp_path / "sock"),
            "saltcd": saltcd,
        })
        (tmp_path / "cache" / "proc").mkdir(parents=True, exist_ok=True)  # the master makes it at start
        return opts
    return build


@pytest.fixture
def example_config(repo_root):
    return yaml.safe_load((repo_root / "config.example.yaml").read_text())["saltcd"]
