"""Imports point down the layers only, and no two packages import each other.

Read with `ast`, so no module is executed: every `import` / `from ... import`
counts wherever it sits (module level, inside functions, under TYPE_CHECKING),
and so does a string literal passed to `importlib.import_module`.
That a config file loads without jax is tests/test_configs.py's.
"""
from __future__ import annotations

import ast
import itertools
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("sidjax", "experiments", "bench")

# The layer table, lowest first. A module may import from its own row or rows below it.
# A name matches itself and everything under it (the longest matching name wins), except
# `sidjax`, the package's __init__, which matches only itself.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("sidjax.utils",),
    ("sidjax.sid", "sidjax.model"),
    ("sidjax.parallel",),
    ("sidjax.decode",),
    ("sidjax.data", "sidjax.teacher"),
    ("sidjax.train", "sidjax.eval", "sidjax.baselines"),
    ("sidjax.configs",),  # the schema: names knobs in the vocabularies below; a bundle reads saved configs with it
    ("sidjax.bundle",),
    ("sidjax.stages",),
    ("sidjax.api", "sidjax", "experiments", "bench"),
)
# The axis-rule table is the vocabulary every layer names its array dimensions in
# (the model's params and activations, the k-means shards): it sits with utils, and
# imports nothing from sidjax. It counts as a package of its own in the cycle check.
# The projections in the fast matmul form and the per-feature parameters (a bias, a norm's scale) are the
# model's and the RQ-VAE's (sidjax.sid) alike: they import nothing from sidjax either.
MODULE_LAYERS = {"sidjax.parallel.rules": 0, "sidjax.model.linear": 0, "sidjax.model.per_feature": 0}



def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """Row of the layer table a module belongs to; None for modules outside the project."""
    if module in MODULE_LAYERS:
        return MODULE_LAYERS[module]
    best = None
    for row, names in enumerate(LAYERS):
        for name in names:
            if module == name or (name != "sidjax" and module.startswith(name + ".")):
                if best is None or len(name) > len(best[1]):
                    best = (row, name)
    return None if best is None else best[0]


def package_of(module: str) -> str:
    """The unit cycles are checked between: sidjax.<package>, the top-level name, or a module placed by hand."""
    if module in MODULE_LAYERS:
        return module
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "sidjax" else parts[0]


def imported_modules(path: Path, module: str) -> set[str]:
    """Every project module `path` names in an import or an importlib.import_module literal."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            # `from sidjax.sid import codes` imports the module sidjax.sid.codes; `base` counts only
            # when a name is taken from it (`from sidjax import bundle` uses no name of sidjax/__init__)
            submodules = {f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}")}
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)
        elif (isinstance(node, ast.Call) and _called_name(node.func) == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {m for m in found if layer_of(m) is not None and m != module}


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def project_imports() -> dict[str, set[str]]:
    """{module: project modules it imports} over every scanned .py file."""
    graph = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            module = module_name(path)
            graph[module] = imported_modules(path, module)
    return graph


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(src, dst) for src, dsts in graph.items() for dst in dsts if layer_of(dst) > layer_of(src)}


def package_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected groups of more than one package in the package import graph (Tarjan)."""
    edges: dict[str, set[str]] = {}
    for src, dsts in graph.items():
        for dst in dsts:
            a, b = package_of(src), package_of(dst)
            edges.setdefault(a, set())
            edges.setdefault(b, set())
            # a package's __init__ (`sidjax`) is the container of the others, not a peer
            if a != b and b != "sidjax":
                edges[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    counter = itertools.count()

    def visit(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(frozenset(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_every_scanned_module_has_a_layer():
    graph = project_imports()
    assert "sidjax.sid.codes" in graph and "experiments.configs.demo" in graph and "bench.all" in graph
    assert all(layer_of(m) is not None for m in graph), [m for m in graph if layer_of(m) is None]


def test_no_import_points_up():
    upward = upward_imports(project_imports())
    assert not upward, "imports from a higher layer:\n" + "\n".join(f"  {a} -> {b}" for a, b in sorted(upward))


def test_no_package_cycles():
    cycles = package_cycles(project_imports())
    assert not cycles, f"packages that import each other: {[sorted(g) for g in cycles]}"


def test_the_checker_sees_function_level_and_importlib_imports(tmp_path):
    source = ("def f():\n    from sidjax.stages import sft\n"
              "def g():\n    import importlib\n    return importlib.import_module('sidjax.configs.sft')\n"
              "from . import codes\n")
    path = tmp_path / "example.py"
    path.write_text(source)
    found = imported_modules(path, "sidjax.sid.example")
    assert {"sidjax.stages.sft", "sidjax.configs.sft", "sidjax.sid.codes"} <= found
    assert upward_imports({"sidjax.sid.example": found}) >= {("sidjax.sid.example", "sidjax.stages.sft"),
                                                             ("sidjax.sid.example", "sidjax.configs.sft")}
    assert package_cycles({"sidjax.sid.a": {"sidjax.data.b"}, "sidjax.data.b": {"sidjax.teacher.c"},
                           "sidjax.teacher.c": {"sidjax.sid.d"}}) == [
        frozenset({"sidjax.sid", "sidjax.data", "sidjax.teacher"})]

