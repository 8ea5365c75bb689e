"""The key=value format of every log line (saslnetauth.logfmt), pinned value by value."""

from __future__ import annotations

import io
import logging
import os
import re

from saslnetauth.logfmt import MAX_VALUE, kv


class Shown(str):
    """A str subclass that shows itself otherwise (as an enum member may)."""

    def __str__(self) -> str:
        return "shown"


def test_values_are_cleaned_quoted_and_masked() -> None:
    assert kv("event") == "event"
    assert kv("e", a=None, b="x") == "e: b=x"
    assert kv("e", yes=True, no=False, n=0, f=1.5) == "e: yes=yes no=no n=0 f=1.5"
    assert kv("e", empty="") == 'e: empty=""'
    assert kv("e", rule="user network 192.0.2.0/24") == 'e: rule="user network 192.0.2.0/24"'
    assert kv("e", v='a"b', w="k=v", x="back\\slash") == ('e: v="a\\"b" w="k=v" x="back\\\\slash"')
    assert kv("e", user="al\nice\x00\u2028") == "e: user=al?ice??"
    assert kv("e", v="x" * (MAX_VALUE + 1)) == f"e: v={'x' * MAX_VALUE}..."
    assert kv("e", v="x" * MAX_VALUE) == f"e: v={'x' * MAX_VALUE}"
    assert (
        kv("e", error="cannot use mysql://u:pw@h/db") == 'e: error="cannot use mysql://u:***@h/db"'
    )
    assert kv("e", url="postgresql://u:p@w@h/db") == "e: url=postgresql://u:***@h/db"
    assert kv("e", reason=Shown("a")) == "e: reason=shown"  # as str() shows it


def test_a_server_line_is_the_same_with_the_cheaper_records() -> None:
    """setup_logging stops the logging module collecting what LOG_FORMAT never shows
    (the caller's frame, the thread): the line keeps its shape."""
    from saslnetauth.runtime import setup_logging
    from saslnetauth.settings import Config

    saved = (logging._srcfile, logging.logThreads, logging.logMultiprocessing)
    stream = io.StringIO()
    try:
        setup_logging(Config(), stream=stream, level="INFO")
        logging.getLogger("saslnetauth.auth").info("%s", kv("auth ok", user="alice"))
    finally:
        logging._srcfile, logging.logThreads, logging.logMultiprocessing = saved
        root = logging.getLogger("saslnetauth")
        for handler in list(root.handlers):
            root.removeHandler(handler)
    line = stream.getvalue()
    pattern = (
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} saslnetauth\[(\d+)\]: INFO auth ok: user=alice\n"
    )
    found = re.fullmatch(pattern, line)
    assert found is not None, line
    assert int(found.group(1)) == os.getpid()
