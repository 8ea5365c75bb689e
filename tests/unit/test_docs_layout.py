"""The layout table of docs/design.md ("Layout") matches the tree: every folder of
saslnetauth/ and every top-level module is listed, every listed path exists, and the
row of a single folder names exactly that folder's modules. Pure: reads files only."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "saslnetauth"


def layout_rows(text: str) -> list[tuple[list[str], str]]:
    """(paths of the first cell, the job cell) of each row of the "Layout" table; a
    name without ``saslnetauth/`` is relative to the folder of the row's first path."""
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        where, job = line.strip("|").split("|", 1)
        names = re.findall(r"`([^`]+)`", where)
        base = names[0].rstrip("/").rpartition("/")[0] if names else ""
        paths = [n if n.startswith("saslnetauth/") else f"{base}/{n}" for n in names]
        rows.append((paths, job))
    return rows


def folders() -> set[str]:
    return {
        p.parent.relative_to(ROOT).as_posix() + "/"
        for p in PACKAGE.rglob("__init__.py")
        if p.parent != PACKAGE
    }


def modules(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.py") if p.name != "__init__.py"}


def check(rows: list[tuple[list[str], str]]) -> list[str]:
    """What the table and the tree disagree on, one line each."""
    problems = []
    listed = {p for paths, _ in rows for p in paths}
    for path in sorted(listed):
        target = ROOT / path
        if path.endswith("/") and not (target / "__init__.py").is_file():
            problems.append(f"{path}: listed, no such package")
        elif not path.endswith("/") and not target.is_file():
            problems.append(f"{path}: listed, no such file")
    for folder in sorted(folders() - listed):
        problems.append(f"{folder}: not in the table")
    for name in sorted(modules(PACKAGE)):
        if f"saslnetauth/{name}.py" not in listed:
            problems.append(f"saslnetauth/{name}.py: not in the table")
    for paths, job in rows:
        if len(paths) != 1 or not paths[0].endswith("/"):
            continue
        named = {n for n in re.findall(r"`([^`]+)`", job) if re.fullmatch(r"[a-z_][a-z0-9_]*", n)}
        have = modules(ROOT / paths[0])
        problems += [f"{paths[0]}{n}.py: not named in its row" for n in sorted(have - named)]
        problems += [
            f"{paths[0]}{n}.py: named in its row, no such module" for n in sorted(named - have)
        ]
    return problems


def test_the_layout_table_matches_the_tree() -> None:
    rows = layout_rows((ROOT / "docs" / "design.md").read_text())
    assert len(rows) >= 10
    assert check(rows) == []


def test_the_readme_points_at_the_layout() -> None:
    assert "(docs/design.md#layout)" in (ROOT / "README.md").read_text()


def test_the_check_sees_a_stale_table() -> None:
    rows = layout_rows((ROOT / "docs" / "design.md").read_text())
    dropped = [r for r in rows if r[0] != ["saslnetauth/store/"]]
    assert "saslnetauth/store/: not in the table" in check(dropped)
    stale = [(["saslnetauth/serve/"], "`alerts`, `metrics`, `gone`")] + [
        r for r in rows if r[0] != ["saslnetauth/serve/"]
    ]
    problems = check(stale)
    assert "saslnetauth/serve/revokewatch.py: not named in its row" in problems
    assert "saslnetauth/serve/gone.py: named in its row, no such module" in problems
    extra = [*rows, (["saslnetauth/nothing.py", "saslnetauth/void/"], "")]
    assert check(extra) == [
        "saslnetauth/nothing.py: listed, no such file",
        "saslnetauth/void/: listed, no such package",
    ]
