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
    ],
)
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def test_readme_configuration_table_names_every_key() -> None:
    """The README's configuration table stays true to the code (new keys included)."""
    readme = (SAMPLE.parents[1] / "README.md").read_text()
    table = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = re.sub(r"\[\w+\] ", "", " ".join(row.split("|")[1] for row in rows))
    missing = sorted(k for k in _keys(Config()) if f"`{k.rsplit('.', 1)[-1]}`" not in named)
    assert missing == [], missing
