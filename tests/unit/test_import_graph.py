"""The package's import graph and its size rules, read from the source (``ast``,
nothing imported or run): no cycle between modules, counting the imports under
``TYPE_CHECKING`` and inside functions (an annotation-only import still ties the
two modules together for the reader); the pure policy core imports nothing of
the responder, the store, the command line or the admin tools, not even through
another module; no module over 400 lines, no function over 60 (docs/design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "saslnetauth"
#: The pure room and the rooms it must never reach.
PURE = "saslnetauth.policy"
FORBIDDEN = ("saslnetauth.serve", "saslnetauth.store", "saslnetauth.cli", "saslnetauth.admin")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


#: Being made smaller on branch h/house (the process wiring, the import and export
#: commands, the configuration check, the network parser, /metrics' rendering, the
#: store's row conversions): fixed on branch h/house; delete at its merge.
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        out[_module_name(path)] = (path, ast.parse(path.read_text(), str(path)))
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    """The module of ``name`` (a module, or a name in a module) among ``known``."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, tree: ast.Module, known: set[str]) -> set[str]:
    """Every module of the package ``module`` imports, wherever the import stands:
    ``from a.b import c`` is an edge to the module ``a.b.c`` when there is one, else to
    ``a.b`` (the parent packages' ``__init__`` are not counted: a package that gathers
    its modules would otherwise be in a circle with each of them)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names]
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, t, known) for m, (p, t) in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in order, the first repeated), or None."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found is not None:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found is not None:
                return found
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from ``start``, each with the module that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in seen and nxt != start:
                seen[nxt] = node
                todo.append(nxt)
    return seen


def _way(via: dict[str, str], start: str, end: str) -> list[str]:
    out = [end]
    while out[-1] != start:
        out.append(via[out[-1]])
    return out[::-1]


def test_the_graph_sees_every_kind_of_import() -> None:
    """The reader itself: a module-level, a TYPE_CHECKING and a function-local import
    each make an edge (else the checks below could pass on a blind graph)."""
    graph = _graph()
    # module level
    assert "saslnetauth.policy.login" in graph["saslnetauth.policy.engine"]
    # under TYPE_CHECKING
    assert "saslnetauth.policy.rules.geoip" in graph["saslnetauth.policy.engine"]
    # inside a function (the worker process builds its engine lazily)
    assert "saslnetauth.runtime" in graph["saslnetauth.serve.decide.worker_process"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_pure_core_reaches_no_responder_store_cli_or_admin() -> None:
    graph = _graph()
    bad = []
    for module in sorted(m for m in graph if m == PURE or m.startswith(PURE + ".")):
        via = _reachable(graph, module)
        for target in sorted(via):
            if target.startswith(FORBIDDEN) or target == "saslnetauth.runtime":
                bad.append(" -> ".join(_way(via, module, target)))
    assert not bad, "the pure core reaches out:\n" + "\n".join(bad)


def _functions(tree: ast.AST, prefix: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            # from its def to its last line (a command's declarative decorators aside)
            out.append((f"{prefix}.{node.name}", node.end_lineno - node.lineno + 1))
            out += _functions(node, f"{prefix}.{node.name}")
        elif isinstance(node, ast.ClassDef):
            out += _functions(node, f"{prefix}.{node.name}")
    return out


def test_no_module_over_400_lines_and_no_function_over_60() -> None:
    long_modules, long_functions = [], []
    for module, (path, tree) in _modules().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{module}: {lines} lines")
        for name, size in _functions(tree, module):
            if size > MAX_FUNCTION_LINES:
                long_functions.append(f"{name}: {size} lines")
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)
