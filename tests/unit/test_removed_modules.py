"""No code of the project imports a standard module that Python 3.12 or 3.13 removed.

Debian 13 runs Python 3.13, which removed ``crypt`` and the rest of PEP 594's
"dead batteries" (3.12 had removed ``distutils``, ``imp``, ``asyncore``,
``asynchat`` and ``smtpd``). saslnetauth calls libcrypt's ``crypt_rn``
through ctypes, python-pam uses ctypes, and libpass (the maintained passlib)
no longer touches ``crypt``; the Debian 13 tier (tests/peers/test_debian13_python.py)
imports and runs all of it under 3.13. This test keeps new code from
bringing such an import back, even inside a ``try``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REMOVED = {
    # 3.12
    "asynchat",
    "asyncore",
    "distutils",
    "imp",
    "smtpd",
    # 3.13 (PEP 594, and lib2to3)
    "aifc",
    "audioop",
    "cgi",
    "cgitb",
    "chunk",
    "crypt",
    "imghdr",
    "lib2to3",
    "mailcap",
    "msilib",
    "nis",
    "nntplib",
    "ossaudiodev",
    "pipes",
    "sndhdr",
    "spwd",
    "sunau",
    "telnetlib",
    "uu",
    "xdrlib",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_import_of_a_removed_standard_module() -> None:
    files = [
        p
        for top in ("saslnetauth", "migrations", "tests", "benchmarks")
        for p in (ROOT / top).rglob("*.py")
    ]
    assert len(files) > 50
    found = {str(p.relative_to(ROOT)): sorted(_imports(p) & REMOVED) for p in files}
    assert {k: v for k, v in found.items() if v} == {}
