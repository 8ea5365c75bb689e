"""The README's quick-start commands, as the tests that keep them true read them."""

from __future__ import annotations

import re

from tests.support.roots import REPO

__all__ = ["README", "quickstart"]

README = (REPO / "README.md").read_text()


def quickstart() -> list[str]:
    """The quick start's shell commands, comments left out."""
    block = README.split("<!-- quickstart -->", 1)[1].split("<!-- /quickstart -->", 1)[0]
    shells = re.findall(r"```sh\n(.*?)```", block, re.S)
    return [ln for sh in shells for ln in sh.splitlines() if ln and not ln.startswith("#")]
