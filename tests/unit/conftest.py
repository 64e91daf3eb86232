import pytest

from saltcd import config

TOKEN = "s3cret-token"
RAW = {
    "registries": {"127.0.0.1:5000": {"scheme": "http"}},
    "sources": {"registry": {"token": TOKEN},
                "hub": {"format": "dockerhub", "hmac_secret": "hub-secret"}},
    "ci_minions": ["ci-1"],
    "apps": {
        "web": {
            "repository": "127.0.0.1:5000/saltcd/web",
            "container": "web",
            "ports": ["8080:8080"],
            "environment": {"GREETING": "hello"},
            "health": {"path": "/health", "port": 8080, "timeout": 20},
            "batch": 1,
            "environments": {
                "dev": {"target": "dev-*"},
                "qa": {"target": "qa-*", "batch": "50%"},
                "prod": {"target": "prod-*", "batch": [1, "100%"], "health": {"settle": 5}, "mode": "auto",
                         "max_failures": 1, "on_failure": "pause"},
            },
        },
        "api": {
            "repository": "127.0.0.1:5000/saltcd/api",
            "environments": {"dev": {"target": "I@role:api", "tgt_type": "compound"}},
        },
    },
}


@pytest.fixture
def raw_config():
    import copy
    return copy.deepcopy(RAW)


@pytest.fixture
def settings(raw_config):
    return config.load(raw_config)
