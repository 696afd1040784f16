"""The import graph of parapolicy, envs and eval has no cycles, and `import parapolicy` stays light.

The graph is read from the source with `ast`: every `import` and `from ... import` anywhere in a module,
at module level or inside a function, is an edge to the module it names (`from pkg import sub` names `pkg.sub`
when `sub` is a module of ours, else `pkg`). Imports of anything outside our three packages are not edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("parapolicy", "envs", "eval")
HEAVY = ("hydra", "wandb", "gymnasium", "pymunk", "zarr")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _targets(node: ast.AST, module: str, is_package: bool, known: dict) -> set[str]:
    """Our modules that one import statement imports."""

    def ours(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str | None] = set()
    if isinstance(node, ast.Import):
        found = {ours(alias.name) for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        for alias in node.names:
            sub = f"{prefix}.{alias.name}"
            found.add(sub if sub in known else ours(prefix))
    return {m for m in found if m is not None and m != module}


def import_graph() -> dict[str, set[str]]:
    """{module: modules of ours it imports}, over every import statement in the module's source."""
    known = _modules()
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = set()
        for node in ast.walk(tree):
            graph[name] |= _targets(node, name, path.name == "__init__.py", known)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "parapolicy.policy" in graph and "parapolicy.model" in graph
    # parapolicy/__init__.py imports parapolicy.policy only inside load_policy.
    assert "parapolicy.policy" in graph["parapolicy"]


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    detail = "\n".join(
        " <-> ".join(comp) + "\n" + "\n".join(f"    {m} -> {sorted(graph[m] & set(comp))}" for m in comp)
        for comp in found)
    assert not found, f"import cycles:\n{detail}"


def test_import_parapolicy_imports_no_heavy_dependency():
    code = ("import sys, parapolicy; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing parapolicy imported: {out.stdout.strip()}"
