"""The README and the manual in docs/ link only to what exists: every relative link
``[text](path)``, ``[text](path#anchor)`` and ``[text](#anchor)`` in README.md and
docs/*.md names an existing file and, for an anchor into a Markdown file, one of its
headings (GitHub's slugs); every page of docs/ is reachable from the README and listed
in docs/index.md. Pure: reads files only."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Pages another branch adds, linked already: allowed to be missing until they land
#: (then they are checked like every page, and must leave this set).
PENDING = {"docs/testing.md"}

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """``text`` without fenced code blocks (their lines become empty)."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text in lower case, without
    punctuation but ``-`` and ``_``, spaces made ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor in a Markdown text (repeats get ``-1``, ``-2``...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(text).splitlines():
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(text: str) -> Iterator[str]:
    """The targets of the links in ``text``, outside code blocks and code spans."""
    body = _CODE_SPAN.sub("", prose(text))
    for m in _LINK.finditer(body):
        yield m.group(2)


def broken(path: Path, root: Path, pending: Collection[str] = ()) -> list[str]:
    """The relative links of ``path`` that do not resolve, each with the reason."""
    problems = []
    for target in links(path.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        rel = dest.relative_to(root).as_posix() if dest.is_relative_to(root) else str(dest)
        if not dest.exists():
            if rel not in pending:
                problems.append(f"{path.relative_to(root)}: {target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            problems.append(f"{path.relative_to(root)}: {target}: no heading with that anchor")
    return problems


def linked_pages(path: Path, root: Path) -> set[Path]:
    """The existing Markdown files under ``root`` that ``path`` links to."""
    found = set()
    for target in links(path.read_text()):
        file = target.partition("#")[0]
        if not file or re.match(r"[a-z][a-z0-9+.-]*:", file, re.I):
            continue
        dest = (path.parent / file).resolve()
        if dest.suffix == ".md" and dest.is_file() and dest.is_relative_to(root):
            found.add(dest)
    return found


def reachable(start: Path, root: Path) -> set[Path]:
    todo, seen = [start.resolve()], {start.resolve()}
    while todo:
        for page in linked_pages(todo.pop(), root):
            if page not in seen:
                seen.add(page)
                todo.append(page)
    return seen


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def test_every_relative_link_and_anchor_resolves() -> None:
    problems = [p for page in pages(ROOT) for p in broken(page, ROOT, PENDING)]
    assert problems == []


def test_pending_pages_are_still_missing() -> None:
    """A page that landed is checked like the others: take it out of PENDING."""
    assert [p for p in sorted(PENDING) if (ROOT / p).exists()] == []


def test_every_docs_page_is_reachable_from_the_readme_and_listed_in_the_index() -> None:
    docs = {p.resolve() for p in (ROOT / "docs").glob("*.md")}
    assert len(docs) >= 15
    assert docs - reachable(ROOT / "README.md", ROOT) == set()
    index = ROOT / "docs" / "index.md"
    assert docs - {index.resolve()} - linked_pages(index, ROOT) == set()


def test_the_readme_links_the_manual() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = set(links(readme))
    assert "docs/index.md" in targets
    assert {"docs/configuration.md", "docs/dovecot.md", "docs/policy.md"} <= targets


_CITATION = re.compile(r'(README|docs/[\w.-]+\.md)(?:\.md)?(?:,? "([^"]+)")?')


def headings(text: str) -> list[str]:
    """The text of every heading, without code marks, in lower case."""
    found = []
    for line in prose(text).splitlines():
        m = _HEADING.match(line)
        if m:
            found.append(m.group(2).replace("`", "").lower())
    return found


def citations(root: Path) -> Iterator[tuple[str, str, str | None]]:
    """(file, page, section or None) of each citation of the project's own docs in
    its code, tests, benchmarks and examples: ``docs/dovecot.md, "Lua bridge"``."""
    for folder in ("saslnetauth", "tests", "benchmarks", "dovecot-examples", "debian"):
        for path in sorted((root / folder).rglob("*")):
            if (
                not path.is_file()
                or path.suffix in (".pyc", ".mmdb")
                or path.name == Path(__file__).name
            ):
                continue
            text = path.read_text(errors="replace")
            for m in _CITATION.finditer(text):
                page = "README.md" if m.group(1) == "README" else m.group(1)
                section = m.group(2)
                if section is not None:  # one line of a comment may continue on the next
                    section = " ".join(re.sub(r"\n\s*(#:?|--|//)?", " ", section).split())
                yield path.relative_to(root).as_posix(), page, section


def test_code_cites_existing_pages_and_sections() -> None:
    """'see docs/dovecot.md, "Policy endpoint"' in an error message or a comment names
    a page that exists and a heading of it (the heading may go on: "Policy endpoint
    (`[policy]`, 2.3 and 2.4)")."""
    problems, seen = [], 0
    for where, page, section in citations(ROOT):
        seen += 1
        if not (ROOT / page).is_file():
            if page not in PENDING:
                problems.append(f"{where}: {page}: no such page")
            continue
        known = headings((ROOT / page).read_text())
        if section is not None and not any(h.startswith(section.lower()) for h in known):
            problems.append(f'{where}: {page}, "{section}": no such heading')
    assert seen > 30
    assert problems == []


def test_slugs_are_githubs() -> None:
    assert (
        slug("Dovecot 2.3: `saslnetauth-checkpassword`") == "dovecot-23-saslnetauth-checkpassword"
    )
    assert slug("The responder: `saslnetauth serve`") == "the-responder-saslnetauth-serve"
    assert slug("Policy endpoint (`[policy]`, 2.3 and 2.4)") == "policy-endpoint-policy-23-and-24"
    assert slug("New-location alerts") == "new-location-alerts"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Bee\n\n## Two words\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/b.md) [ok](docs/b.md#two-words) [ok](#top)\n# Top\n"
        "[gone](docs/c.md) [bad anchor](docs/b.md#three) [self](#nowhere)\n"
        "`[in code](docs/x.md)`\n```\n[in a block](docs/y.md)\n```\n[split\ntext](docs/z.md)\n"
        "[pending](docs/p.md) [web](https://example.org/nothing)\n"
    )
    problems = broken(tmp_path / "README.md", tmp_path, {"docs/p.md"})
    assert problems == [
        "README.md: docs/c.md: no such file",
        "README.md: docs/b.md#three: no heading with that anchor",
        "README.md: #nowhere: no heading with that anchor",
        "README.md: docs/z.md: no such file",
    ]
    assert reachable(tmp_path / "README.md", tmp_path) == {
        (tmp_path / "README.md").resolve(),
        (tmp_path / "docs" / "b.md").resolve(),
    }
