"""Configuration loading, and the shipped sample config staying true to the code."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from saslnetauth.config import Config, load_config
from saslnetauth.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "dovecot-examples" / "saslnetauth.toml"


def _keys(obj: object, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out |= _keys(value, f"{prefix}{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


def _flat(data: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_sample_documents_every_key_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SASLNETAUTH_DATABASE_URL", raising=False)
    sample = _flat(tomllib.loads(SAMPLE.read_text()))
    default = Config()
    assert set(sample) == _keys(default)
    for key, value in sample.items():
        obj: object = default
        for part in key.split("."):
            obj = getattr(obj, part)
        assert obj == value, key
    assert load_config(SAMPLE).source == SAMPLE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope = 1", "unknown key 'nope'"),
        ("[serve]\nfailure_delay = 20", "failure_delay"),
        ("[serve]\nfailure_delay = 'x'", "expected a number"),
        ("[serve]\nsocket_mode = '999'", "octal"),
        ("[passwords]\nrehash_on_login = 'yes'", "expected true or false"),
        ("serve = 3", "expected a table"),
        ("[logging]\nlevel = 'loud'", "logging.level"),
        ("x = [", "invalid TOML"),
        # issue 11 item 7: every combination of delays below the clients' timeouts
        ("[serve]\nuser_penalty = true", r"failure_delay 2 \+ penalty_max 4 \+ user_penalty"),
        ("[serve]\nfailure_delay = 5\npenalty_max = 3.5", "more than 8 s"),
        ("[serve]\nfailure_delay = 2\npenalty_max = 3.5\nuser_penalty = true", "= 9 s"),
        # issue 21 item 2: the HTTP listeners' connection limits
        ("[policy]\nfirst_byte_timeout = 0", "policy.first_byte_timeout"),
        ("[policy]\nmax_connections = 0", "policy.max_connections: at least 1"),
        ("[policy]\nmax_connections = 8\nmax_connections_per_peer = 9", "up to max_connections"),
    ],
)
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def _documented_config_keys() -> set[str]:
    """Keys named in the first column of the configuration table (docs/configuration.md)."""
    page = (SAMPLE.parents[1] / "docs" / "configuration.md").read_text()
    section = page.split("\n| key | default | meaning |\n", 1)[1].split("\n\n", 1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        table = re.match(r"\s*`\[(\w+)\]", cell)
        for name in re.findall(r"`(?:\[\w+\] )?(\w+)`", cell):
            keys.add(f"{table.group(1)}.{name}" if table else name)
    return keys


def test_configuration_page_documents_every_key() -> None:
    assert _documented_config_keys() == _keys(Config())


def test_delay_combinations_within_the_budget_load(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[serve]\nfailure_delay = 2\npenalty_max = 3\nuser_penalty = true\n")
    cfg = load_config(p)
    assert cfg.serve.failure_delay + 2 * cfg.serve.penalty_max <= 8


@pytest.mark.parametrize("name", ["\u00b2", "\u0661\u0660\u0660"])
def test_allowed_users_numeric_ids_are_ascii_digits_only(name: str) -> None:
    """Non-ASCII digits pass str.isdigit(); int() then raised a bare ValueError
    (superscript two) or read another uid (Arabic-Indic 100): the class of issue 11
    item 3. Such a name is an unknown user."""
    from saslnetauth.serve.authsocket.access import PeerPolicy
    from saslnetauth.settings import ServeConfig

    with pytest.raises(ConfigError, match="no such user"):
        PeerPolicy.from_settings(ServeConfig(allowed_users=[name]))


@pytest.mark.parametrize("text", ["inet:127.0.0.1:\u00b2", "inet:127.0.0.1:\u0661\u0662"])
def test_listen_port_is_ascii_digits_only(text: str) -> None:
    from saslnetauth.serve.authsocket.listeners import parse_listen

    with pytest.raises(ConfigError, match="invalid port"):
        parse_listen(text)
