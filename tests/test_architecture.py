"""The package's shape, checked from its source with ``ast``: no import cycle, no private name
imported from another module, the layers that must not know the demo do not import it, the search
does not call the report, and each user string is turned into a value in one place."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import autoprune

ROOT = Path(autoprune.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["autoprune", *parts])] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """(imported module, imported name or None, line) for every autoprune import of ``name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("autoprune"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in MODULES:
                    yield full, None, node.lineno
                else:
                    yield target, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("autoprune"):
                    yield alias.name, None, node.lineno


def _graph() -> dict[str, set[str]]:
    g = defaultdict(set)
    for name, path in MODULES.items():
        for target, _, _ in _imports(name, path):
            if target in MODULES and target != name:
                g[name].add(target)
    return g


GRAPH = _graph()


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in GRAPH.get(m, ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_the_package():
    assert {"autoprune.search.run", "autoprune.runtime", "autoprune.demo.source"} <= set(MODULES)
    assert "autoprune.search.settings" in GRAPH["autoprune.search.run"]


def test_the_import_graph_has_no_cycle():
    # Imports inside functions count: a lazy import is still a dependency.
    assert _cycles() == []


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name, path in MODULES.items():
        for target, imported, line in _imports(name, path):
            if imported and imported.startswith("_") and not imported.startswith("__") and target != name:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {imported} from {target}")
    assert bad == []


@pytest.mark.parametrize("layer", ["autoprune.search", "autoprune.tasks", "autoprune.models", "autoprune.cost",
                                   "autoprune.profiler", "autoprune.runtime"])
def test_generic_layers_do_not_import_the_demo(layer):
    modules = [m for m in MODULES if m == layer or m.startswith(layer + ".")]
    reached = set().union(*(_reachable(m) for m in modules)) | set(modules)
    assert sorted(m for m in reached if m.startswith("autoprune.demo")) == []


def test_the_search_never_calls_the_report():
    modules = [m for m in MODULES if m.startswith("autoprune.search")]
    reached = set().union(*(_reachable(m) for m in modules))
    assert sorted(m for m in reached if m.startswith("autoprune.report")) == []


def test_planning_a_schedule_needs_no_torch():
    reached = _reachable("autoprune.plan") | {"autoprune.plan"}
    for m in reached:
        tree = ast.parse(MODULES[m].read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom) and not n.level]
        assert not [x for x in names if x.split(".")[0] == "torch"], m


def _calls_of(func: str) -> list[str]:
    out = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if called == func:
                    out.append(f"{name}:{node.lineno}")
    return out


def test_the_budget_string_is_parsed_in_exactly_one_place():
    assert [c.rsplit(":", 1)[0] for c in _calls_of("parse_budget")] == ["autoprune.search.config"]


def test_the_target_gpu_name_is_resolved_in_one_place_per_study():
    callers = {c.rsplit(":", 1)[0] for c in _calls_of("resolve_gpu")}
    assert callers <= {"autoprune.search.run", "autoprune.search.apply"}
    # workers read the resolved spec from the stored settings; they never resolve a name
    workers = MODULES["autoprune.search.workers"].read_text()
    assert "resolve" not in workers.replace("resolve_storage", "")


def _defined_names(path: Path) -> set[str]:
    """Names a module binds at its top level (definitions, assignments, imports)."""
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                out |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.If, ast.Try)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
                    out.add(sub.name)
                elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                    out |= {(a.asname or a.name).split(".")[0] for a in sub.names}
                elif isinstance(sub, ast.Assign):
                    out |= {n.id for t in sub.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def test_every_import_of_an_autoprune_name_resolves_even_inside_functions():
    # A lazy import (on a GPU-only path, say) fails only when that path runs: check them all here.
    defined = {name: _defined_names(path) for name, path in MODULES.items()}
    missing = [f"{name}:{line} imports {target}.{attr}"
               for name, path in MODULES.items() for target, attr, line in _imports(name, path)
               if attr is not None and target in MODULES and attr not in defined[target]
               and "__getattr__" not in defined[target]]
    assert missing == []
