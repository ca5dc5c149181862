"""The package's module-top imports form no cycle, and lower rooms never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "scicot_jax"

# (importer room, imported room): a lower room importing a higher one at any depth.
FORBIDDEN_ROOMS = [
    ("runtime", "train"),
    ("runtime", "pipeline"),
    ("model", "train"),
    ("model", "runtime"),
    ("model", "checkpoints"),
    ("checkpoints", "runtime"),
    ("checkpoints", "train"),
    ("checkpoints", "pipeline"),
    ("data", "train"),
    ("data", "pipeline"),
    ("teacher", "train"),
    ("teacher", "model"),
]


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (annotations only, never imported)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports(top_only: bool) -> dict[str, set[str]]:
    """module -> project modules it imports (module top only, or anywhere in the file)."""
    files = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        out: set[str] = set()
        for node in tree.body if top_only else _runtime_nodes(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, path.name == "__init__.py", node)
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for name in names:
                while name and name not in files:  # `from pkg import mod` or `import pkg.mod.x`
                    name = name.rpartition(".")[0]
                if name and name.startswith("scicot_jax") and name != mod:
                    out.add(name)
        graph[mod] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


# Imports inside functions that still close a cycle (none now): nothing may form one.
KNOWN_CYCLES: list[list[str]] = []


def _without_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A module importing its own package's __init__ (which re-exports it) is no real cycle."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_cycle_among_module_top_imports():
    assert cycles(_without_parents(imports(top_only=True))) == []


def test_no_new_cycle_through_imports_inside_functions():
    assert cycles(_without_parents(imports(top_only=False))) == KNOWN_CYCLES


def test_lower_rooms_do_not_import_higher_ones():
    bad = [
        f"{m} imports {d}"
        for m, deps in imports(top_only=False).items()
        for d in deps
        if (_room(m), _room(d)) in FORBIDDEN_ROOMS
    ]
    assert bad == []


def test_the_graph_sees_a_cycle(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


HEAVY = {"jax", "jaxlib", "flax", "optax", "orbax", "tensorflow", "seqio", "t5"}


def _external(top_only: bool = False) -> dict[str, set[str]]:
    """module -> the top-level names of the non-project packages it imports (at any depth)."""
    out: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        names: set[str] = set()
        for node in tree.body if top_only else _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
        out[_module(path)] = names - {"scicot_jax"}
    return out


def _heavy_reached(prefix: str) -> dict[str, set[str]]:
    """For each module under `prefix`: the HEAVY packages it reaches through project imports."""
    graph, ext = imports(top_only=False), _external()
    found = {}
    for start in (m for m in graph if m == prefix or m.startswith(prefix + ".")):
        seen, todo = {start}, [start]
        while todo:
            for dep in graph[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        heavy = set().union(*(ext[m] & HEAVY for m in seen))
        if heavy:
            found[start] = heavy
    return found


def test_the_teacher_tool_never_imports_jax():
    # The tool runs on machines without accelerators: no module of it reaches jax, flax,
    # tensorflow or seqio, at any depth (imports inside functions included).
    assert _heavy_reached("scicot_jax.teacher") == {}
    assert "jax" in _heavy_reached("scicot_jax.model")["scicot_jax.model"]  # the walk sees it
