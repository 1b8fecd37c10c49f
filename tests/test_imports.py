"""The import graph of sfh_pipeline: every module imports alone, no cycles, layers respected.

The graph is read from the source with ``ast``: relative and absolute imports, at module level
and inside functions (an import in a function runs when it is called, so it is a dependency
all the same); imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "sfh_pipeline"
ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / PACKAGE
MODULES = sorted(path.stem for path in SOURCE.glob("*.py"))

#: Every module's layer, lowest first. A module may import modules of its own layer and of
#: the layers below it, never one above (function-level imports included); only ``ml`` may
#: import torch at module level.
LAYERS = {
    # Facts, numerics and the file layouts everything shares; nothing here knows about SSPs,
    # training sets or networks. kinematics (velocities by template cross-correlation) needs
    # only constants and the line table, and the predictor (ml) uses it: it is here, not in
    # galaxy.
    "core": (
        "atomic",
        "constants",
        "version",
        "instrument",
        "spectral",
        "dust",
        "psf",
        "filters",
        "kinematics",
        "products",
        "samples",
    ),
    # The SSP libraries: fetching, converting, the standard store.
    "ssp": ("fetch_common", "fetch_http", "fetch_pip", "fetch", "ssp", "ssp_formats"),
    # Synthetic spectra: priors, the forward model, the training set, the mock galaxies. qa
    # (figures of the SSP library, the training set's prior and learning curves) imports nothing
    # above ssp and training/evaluation (ml) use it: it is here, not in galaxy.
    "synth": ("priors", "forward", "trainset", "mock", "qa"),
    # The network: the only layer that imports torch.
    "ml": ("model", "ensemble", "training", "evaluation", "predict", "model_card"),
    # Real and mock galaxies through the stages observe, infer, maps, validate.
    "galaxy": (
        "phangs",
        "sdss",
        "observe",
        "binning",
        "extract",
        "covariance",
        "forward_check",
        "infer",
        "maps",
        "atlas",
        "validate",
        "spectra_validation",
    ),
    "top": ("cli", "__init__", "__main__"),
}
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}
RANK = {layer: i for i, layer in enumerate(LAYERS)}
#: Imports of a higher layer allowed anyway: (importer, imported) -> why. None today.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}
#: Modules that may import torch (at module level).
TORCH_LAYER = "ml"


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module of the package, or "torch" for torch and its submodules
    line: int
    module_level: bool


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Package modules (or "torch") that an import statement of a module of the package imports."""
    found = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == PACKAGE:
                found.append(parts[1] if len(parts) > 1 else "__init__")
            elif parts[0] == "torch":
                found.append("torch")
        return found
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] == "torch":
            return ["torch"]
        if parts[0] != PACKAGE:
            return []
        parts = parts[1:]
    elif node.level == 1:
        parts = node.module.split(".") if node.module else []
    else:  # beyond the package: not ours
        return []
    if parts:
        return [parts[0]]
    # "from . import x" / "from sfh_pipeline import x": a submodule, or a name of __init__
    return [alias.name if alias.name in MODULES else "__init__" for alias in node.names]


def imports_of(module: str, source: Path = SOURCE) -> list[Import]:
    """The imports of module ``module`` (file ``source/<module>.py``) of the package."""
    tree = ast.parse((source / f"{module}.py").read_text(), filename=f"{module}.py")
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, module_level)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend(
                Import(module, target, node.lineno, module_level) for target in _targets(node) if target != module
            )
            return
        inside = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, True)
    return found


IMPORTS = {module: imports_of(module) for module in MODULES}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # shortest way back to start inside the component (breadth first)
        previous = {start: None}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(edges.get(v, set()) & members):
                if w == start:
                    path = [v]  # v, its predecessor, ..., start
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    cycles.append([start, *reversed(path[:-1]), start])
                    queue = []
                    break
                if w not in previous:
                    previous[w] = v
                    queue.append(w)
    return cycles


def test_every_module_has_a_layer():
    assert sorted(LAYER_OF) == MODULES, (
        f"modules without a layer: {sorted(set(MODULES) - set(LAYER_OF))}; "
        f"layers naming no module: {sorted(set(LAYER_OF) - set(MODULES))}"
    )


def test_the_graph_reader_sees_relative_absolute_function_level_and_type_checking_imports(tmp_path):
    code = (
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
        "import numpy as np\nfrom .atomic import atomic_path\nimport sfh_pipeline.dust\n"
        "from sfh_pipeline import samples\nfrom . import __version__\n"
        "if TYPE_CHECKING:\n    import torch\n    from .model import SFHNet\n"
        "def f():\n    from .products import read_maps\n    import torch.nn\n"
    )
    tree = ast.parse(code)
    seen = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            seen.extend(_targets(node))
    assert seen.count("torch") == 2 and {"atomic", "dust", "samples", "__init__", "model", "products"} <= set(seen)
    (tmp_path / "probe.py").write_text(code)
    found = {(i.target, i.module_level) for i in imports_of("probe", tmp_path)}
    assert found == {
        ("atomic", True),
        ("dust", True),
        ("samples", True),
        ("__init__", True),
        ("products", False),
        ("torch", False),
    }


def test_no_import_cycles():
    edges = {module: {i.target for i in imports if i.target in MODULES} for module, imports in IMPORTS.items()}
    cycles = find_cycles(edges)
    lines = {(i.importer, i.target): i.line for imports in IMPORTS.values() for i in imports}
    # "maps:210 -> infer:23 -> maps": maps imports infer at its line 210, infer maps at its line 23
    described = [
        " -> ".join(f"{a}:{lines[a, b]}" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}" for cycle in cycles
    ]
    assert not cycles, "import cycles in sfh_pipeline:\n" + "\n".join(described)


def test_find_cycles_names_the_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_a_higher_layer():
    wrong = []
    for module, imports in IMPORTS.items():
        for i in imports:
            if i.target not in LAYER_OF or (module, i.target) in LAYER_EXCEPTIONS:
                continue
            if RANK[LAYER_OF[i.target]] > RANK[LAYER_OF[module]]:
                wrong.append(
                    f"{module} ({LAYER_OF[module]}) imports {i.target} ({LAYER_OF[i.target]}) at line {i.line}"
                    + ("" if i.module_level else ", in a function")
                )
    assert not wrong, "imports of a higher layer:\n" + "\n".join(wrong)


def test_layer_exceptions_are_still_needed():
    used = {(module, i.target) for module, imports in IMPORTS.items() for i in imports}
    assert set(LAYER_EXCEPTIONS) <= used, f"exceptions no import needs any more: {set(LAYER_EXCEPTIONS) - used}"


def test_only_ml_imports_torch_at_module_level():
    wrong = [
        f"{module} ({LAYER_OF[module]}), line {i.line}"
        for module, imports in IMPORTS.items()
        for i in imports
        if i.target == "torch" and i.module_level and LAYER_OF[module] != TORCH_LAYER
    ]
    assert not wrong, "torch imported at module level outside the ml layer: " + ", ".join(wrong)


def _fresh_python(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__main__"])
def test_module_imports_alone_in_a_fresh_interpreter(module):
    """Each module imports by itself (no hidden dependence on what another import did first),
    and importing a module outside ml does not load torch (seconds of start-up per job)."""
    name = PACKAGE if module == "__init__" else f"{PACKAGE}.{module}"
    done = _fresh_python("-c", f"import sys, {name}; print({name}.__file__); print('torch' in sys.modules)")
    assert done.returncode == 0, f"import {name} fails alone:\n{done.stderr}"
    where, torch_loaded = done.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(SOURCE)  # this checkout's package, not an installed one
    if LAYER_OF[module] != TORCH_LAYER:
        assert torch_loaded == "False", f"import {name} loads torch"


def test_package_runs_as_a_module():
    done = _fresh_python("-m", PACKAGE, "--help")
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr


def test_the_layer_table_of_the_docs_is_this_one():
    """docs/pipeline.md shows the layers to readers: it must list the modules this test enforces."""
    import re

    rows = {
        line.split("|")[1].strip(): re.findall(r"`(\w+)`", line.split("|")[2])
        for line in (ROOT / "docs" / "pipeline.md").read_text().splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in LAYERS
    }
    assert {layer: sorted(modules) for layer, modules in rows.items()} == {
        layer: sorted(modules) for layer, modules in LAYERS.items()
    }
