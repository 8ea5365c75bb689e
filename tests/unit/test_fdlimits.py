"""The file descriptor budget of ``saslnetauth serve`` (issue 21, item 2)."""

from __future__ import annotations

import pytest

from saslnetauth.errors import ConfigError
from saslnetauth.serve.authsocket.fdlimits import plan
from saslnetauth.settings import Config


def _everything_on() -> Config:
    cfg = Config()
    cfg.serve.workers = 2
    cfg.serve.metrics_listen = "inet:127.0.0.1:9477"
    cfg.serve.userdb_listen = "unix:/run/saslnetauth/userdb"
    cfg.policy.listen = "inet:127.0.0.1:4001"
    return cfg


def test_each_listener_takes_its_limit_and_the_rest_is_the_mail_servers() -> None:
    got = plan(_everything_on(), limit=2000)
    assert got.reserved == {
        "reserve": 64,
        "workers": 16,
        "serve.max_connections": 1000,
        "policy.max_connections": 512,
        "metrics": 32,
        "userdb": 256,
    }
    assert got.mail_servers == 2000 - 1880
    assert plan(Config(), limit=2000).reserved.keys() == {
        "reserve",
        "workers",
        "serve.max_connections",
    }


def test_too_few_left_for_the_mail_servers_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as err:
        plan(_everything_on(), limit=1979)
    text = str(err.value)
    assert "the limit (RLIMIT_NOFILE) is 1979" in text
    assert "policy.max_connections 512" in text and "leaves 99" in text
    assert "LimitNOFILE=" in text
    assert plan(_everything_on(), limit=1980).mail_servers == 100
