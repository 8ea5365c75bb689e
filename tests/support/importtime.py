"""Which modules a process imported, from its ``python -X importtime`` stderr.

Run the program with ``PYTHONPROFILEIMPORTTIME=1`` in its environment (the
same as ``-X importtime``): every import writes one line to stderr, also in
a process that leaves by ``os._exit`` or ``exec``.
"""

from __future__ import annotations

import sys

#: The environment that turns the import profile on.
PROFILE = {"PYTHONPROFILEIMPORTTIME": "1"}

#: The saslnetauth modules the checkpassword fast path may import.
FAST_PATH_MODULES = {
    "saslnetauth",
    "saslnetauth.dovecot",
    "saslnetauth.dovecot.checkpassword",
    "saslnetauth.dovecot.client",
    "saslnetauth.dovecot.escaping",
}


def imported(stderr: str) -> set[str]:
    """The modules the program imported, from ``-X importtime`` output (one line per
    module, a module's imports before it): those of the interpreter's site step
    (up to the ``site`` line: a venv's .pth files, an editable install's finder)
    are left out."""
    names: list[str] = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1]
            if name.strip() == "imported package":  # the header line
                continue
            if name == " site":  # at the top level: the site step ends here
                names.clear()
                continue
            names.append(name.strip())
    return set(names)


def not_stdlib(names: set[str]) -> set[str]:
    """The names that are not the standard library's."""
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}
