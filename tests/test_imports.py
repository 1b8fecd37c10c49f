"""The import graph of sfh_pipeline: every module imports alone, no cycles, layers respected.

A module's layer is its folder: ``sfh_pipeline/<layer>/`` (``core``, ``ssp``, ``synth``, ``ml``,
``galaxy``); the files at the top of the package (``cli``, ``__init__``, ``__main__``) and the
command line of each folder (``<layer>/cli.py``, which sits beside its stage but above every
layer) are the layer ``top``. Only the order of the layers is kept by hand, in LAYER_ORDER.

The graph is read from the source with ``ast``: relative and absolute imports, at module level
and inside functions (an import in a function runs when it is called, so it is a dependency
all the same); imports under ``if TYPE_CHECKING:`` never run and are left out. Modules are
named by their dotted path in the package: ``core.spectral``, ``ssp`` (the folder's
``__init__.py``, the SSP store module), ``cli``; ``__init__`` is the package's own.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "sfh_pipeline"
ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / PACKAGE

#: The layers, lowest first: the one hand-kept fact. A module may import modules of its own
#: layer and of the layers below it, never one above (function-level imports included).
LAYER_ORDER = ("core", "ssp", "synth", "ml", "galaxy", "top")
TOP = "top"
#: The only layer whose modules may import torch at module level.
TORCH_LAYER = "ml"
#: Imports of a higher layer allowed anyway: (importer, imported) -> why. None today.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Module:
    name: str  # dotted path in the package: "core.spectral", "ssp", "cli", "__init__"
    path: Path
    layer: str
    is_package: bool  # an __init__.py: "from . import x" in it means its own folder


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module of the package, or "torch" for torch and its submodules
    line: int
    module_level: bool
    flat: str | None = None  # the flat name of before the folders it was imported by, if any


def modules_of(source: Path = SOURCE) -> dict[str, Module]:
    """Every module of the package at ``source``, with its layer read from its folder."""
    found = {}
    for path in sorted(source.rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        is_package = parts[-1] == "__init__" and len(parts) > 1
        name = ".".join(parts[:-1] if is_package else parts)
        layer = TOP if len(parts) == 1 or parts[-1] == "cli" else parts[0]
        found[name] = Module(name, path, layer, is_package)
    return found


def flat_names_of(source: Path = SOURCE) -> dict[str, str]:
    """{flat name: module} of the modules of the layer folders: ``model`` -> ``ml.model``."""
    modules = modules_of(source)
    return {
        name.split(".")[1]: name
        for name, module in modules.items()
        if name.count(".") == 1 and module.layer != TOP and name.split(".")[1] not in modules
    }


MODULES = modules_of()
FLAT_NAMES = flat_names_of()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(parts: list[str], modules: dict[str, Module], flat_names: dict[str, str]) -> tuple[str, str | None]:
    """The module that importing ``sfh_pipeline.<parts>`` runs last, and the flat name used, if any."""
    flat = None
    if parts and parts[0] in flat_names and parts[0] not in modules:
        flat = parts[0]
        parts = flat_names[flat].split(".") + parts[1:]
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n]), flat
    return "__init__", flat


def _targets(node: ast.Import | ast.ImportFrom, importer: Module, modules, flat_names) -> list[tuple[str, str | None]]:
    """(package module or "torch", flat name used) of each thing an import statement of ``importer`` imports."""
    if isinstance(node, ast.Import):
        found = []
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == PACKAGE:
                found.append(_resolve(parts[1:], modules, flat_names))
            elif parts[0] == "torch":
                found.append(("torch", None))
        return found
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] == "torch":
            return [("torch", None)]
        if parts[0] != PACKAGE:
            return []
        base = parts[1:]
    else:
        here = importer.name.split(".") if importer.is_package else importer.name.split(".")[:-1]
        if node.level - 1 > len(here):  # beyond the package: not ours
            return []
        base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    found = []
    for alias in node.names:
        # "from .x import y": the submodule x.y if there is one, else a name of x
        found.append(_resolve([*base, alias.name], modules, flat_names))
    return found


def imports_of(module: Module, modules: dict[str, Module], flat_names: dict[str, str]) -> list[Import]:
    """The imports of ``module`` that are modules of the package, or torch."""
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, module_level)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend(
                Import(module.name, target, node.lineno, module_level, flat)
                for target, flat in _targets(node, module, modules, flat_names)
                if target != module.name
            )
            return
        inside = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, True)
    return found


def graph_of(source: Path = SOURCE) -> dict[str, list[Import]]:
    modules, flat_names = modules_of(source), flat_names_of(source)
    return {name: imports_of(module, modules, flat_names) for name, module in modules.items()}


IMPORTS = graph_of()


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


# -- the checks, each a list of what is wrong, on any source tree (tests feed them small ones) --


def unknown_folders(source: Path = SOURCE) -> list[str]:
    return sorted({m.layer for m in modules_of(source).values()} - set(LAYER_ORDER))


def cycles_of(source: Path = SOURCE) -> list[str]:
    imports = graph_of(source)
    edges = {module: {i.target for i in found if i.target != "torch"} for module, found in imports.items()}
    lines = {(i.importer, i.target): i.line for found in imports.values() for i in found}
    # "galaxy.maps:210 -> galaxy.infer:23 -> galaxy.maps": maps imports infer at its line 210, infer maps at 23
    return [
        " -> ".join(f"{a}:{lines[a, b]}" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"
        for cycle in find_cycles(edges)
    ]


def upward_imports(source: Path = SOURCE) -> list[str]:
    modules, rank = modules_of(source), {layer: i for i, layer in enumerate(LAYER_ORDER)}
    wrong = []
    for module, found in graph_of(source).items():
        for i in found:
            if i.target == "torch" or (module, i.target) in LAYER_EXCEPTIONS:
                continue
            have, want = modules[module].layer, modules[i.target].layer
            if rank.get(want, -1) > rank.get(have, len(rank)):
                wrong.append(
                    f"{module} ({have}) imports {i.target} ({want}) at line {i.line}"
                    + ("" if i.module_level else ", in a function")
                )
    return wrong


def torch_outside_ml(source: Path = SOURCE) -> list[str]:
    modules = modules_of(source)
    return [
        f"{module} ({modules[module].layer}), line {i.line}"
        for module, found in graph_of(source).items()
        for i in found
        if i.target == "torch" and i.module_level and modules[module].layer != TORCH_LAYER
    ]


def flat_names_used(source: Path = SOURCE) -> list[str]:
    """Imports inside the package by a flat name of before the folders (they are for users)."""
    return [
        f"{module}, line {i.line}: sfh_pipeline.{i.flat} (now {i.target})"
        for module, found in graph_of(source).items()
        for i in found
        if i.flat
    ]


# -- the package --


def test_every_folder_is_a_layer_with_a_docstring():
    assert not unknown_folders(), f"folders of sfh_pipeline that are no layer of LAYER_ORDER: {unknown_folders()}"
    folders = {m.layer for m in MODULES.values()} - {TOP}
    assert folders == set(LAYER_ORDER) - {TOP}, f"layers without a folder: {set(LAYER_ORDER) - {TOP} - folders}"
    for layer in folders:
        docstring = ast.get_docstring(ast.parse((SOURCE / layer / "__init__.py").read_text()))
        assert docstring and docstring.startswith(f"Layer ``{layer}``"), f"{layer}/__init__.py: no layer docstring"


def test_flat_names_are_unambiguous():
    stems = [name.split(".")[1] for name, m in MODULES.items() if name.count(".") == 1 and m.layer != TOP]
    assert sorted(stems) == sorted(set(stems)), "modules of one name in two layer folders"


def test_no_import_cycles():
    cycles = cycles_of()
    assert not cycles, "import cycles in sfh_pipeline:\n" + "\n".join(cycles)


def test_no_module_imports_a_higher_layer():
    wrong = upward_imports()
    assert not wrong, "imports of a higher layer:\n" + "\n".join(wrong)


def test_layer_exceptions_are_still_needed():
    used = {(i.importer, i.target) for found in IMPORTS.values() for i in found}
    assert set(LAYER_EXCEPTIONS) <= used, f"exceptions no import needs any more: {set(LAYER_EXCEPTIONS) - used}"


def test_only_ml_imports_torch_at_module_level():
    wrong = torch_outside_ml()
    assert not wrong, "torch imported at module level outside the ml layer: " + ", ".join(wrong)


def test_the_package_imports_its_modules_by_their_folders():
    wrong = flat_names_used()
    assert not wrong, "flat module names inside the package:\n" + "\n".join(wrong)


# -- the checks catch what they are for, on small made-up packages --


def _package(root: Path, files: dict[str, str]) -> Path:
    """A made-up sfh_pipeline at root/sfh_pipeline with these files (and the folders' __init__.py)."""
    source = root / PACKAGE
    source.mkdir()
    for name, code in {"__init__.py": "", **files}.items():
        path = source / name
        for parent in reversed(path.relative_to(source).parents[:-1]):
            (source / parent).mkdir(parents=True, exist_ok=True)
            (source / parent / "__init__.py").touch()
        path.write_text(code)
    return source


def test_the_graph_reader_sees_relative_absolute_flat_function_level_and_type_checking_imports(tmp_path):
    source = _package(
        tmp_path,
        {
            "core/atomic.py": "",
            "core/dust.py": "",
            "core/samples.py": "",
            "core/products.py": "",
            "ml/model.py": "",
            "synth/sibling.py": "",
            "synth/probe.py": (
                "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
                "import numpy as np\nfrom ..core.atomic import atomic_path\nimport sfh_pipeline.core.dust\n"
                "from sfh_pipeline.core import samples\nfrom .. import __version__\nfrom . import sibling\n"
                "from sfh_pipeline import model\n"
                "if TYPE_CHECKING:\n    import torch\n    from ..ml.model import SFHNet\n"
                "def f():\n    from ..core.products import read_maps\n    import torch.nn\n"
            ),
        },
    )
    found = {(i.target, i.module_level, i.flat) for i in graph_of(source)["synth.probe"]}
    assert found == {
        ("core.atomic", True, None),
        ("core.dust", True, None),
        ("core.samples", True, None),
        ("__init__", True, None),
        ("synth.sibling", True, None),
        ("ml.model", True, "model"),
        ("core.products", False, None),
        ("torch", False, None),
    }
    assert modules_of(source)["synth"].is_package and modules_of(source)["synth.probe"].layer == "synth"


def test_the_checks_catch_an_upward_import_a_cycle_torch_outside_ml_a_flat_name_and_a_stray_folder(tmp_path):
    source = _package(
        tmp_path,
        {
            "core/low.py": "def f():\n    from ..ml.net import Net\n",  # upward, in a function
            "core/a.py": "from .b import x\n",
            "core/b.py": "from . import a\n",  # a -> b -> a
            "synth/gen.py": "import torch\n",
            "ml/net.py": "import torch\nfrom sfh_pipeline.gen import make\n",  # flat name of synth/gen.py
            "ml/cli.py": "from ..galaxy.maps import paint\n",  # a folder's command line is top: fine
            "galaxy/maps.py": "",
            "stages/x.py": "",
        },
    )
    assert upward_imports(source) == ["core.low (core) imports ml.net (ml) at line 2, in a function"]
    assert cycles_of(source) == ["core.a:1 -> core.b:1 -> core.a"]
    assert torch_outside_ml(source) == ["synth.gen (synth), line 1"]
    assert flat_names_used(source) == ["ml.net, line 2: sfh_pipeline.gen (now synth.gen)"]
    assert unknown_folders(source) == ["stages"]


def test_find_cycles_names_the_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


# -- in fresh interpreters --


def _fresh_python(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__main__"])
def test_module_imports_alone_in_a_fresh_interpreter(module):
    """Each module imports by itself (no hidden dependence on what another import did first),
    and importing a module outside ml, or a layer's __init__, does not load torch (seconds of
    start-up per job)."""
    name = PACKAGE if module == "__init__" else f"{PACKAGE}.{module}"
    done = _fresh_python("-c", f"import sys, {name}; print({name}.__file__); print('torch' in sys.modules)")
    assert done.returncode == 0, f"import {name} fails alone:\n{done.stderr}"
    where, torch_loaded = done.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(SOURCE)  # this checkout's package, not an installed one
    if MODULES[module].layer != TORCH_LAYER or MODULES[module].is_package:
        assert torch_loaded == "False", f"import {name} loads torch"


def test_import_sfh_pipeline_does_not_load_torch():
    done = _fresh_python("-c", "import sys, sfh_pipeline; sfh_pipeline.FLAT_NAMES; print('torch' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr or "import sfh_pipeline loads torch"


_SAME_MODULE = """
import importlib, json, sys
import sfh_pipeline

flat_names = json.loads(sys.argv[1])
assert sfh_pipeline.FLAT_NAMES == {flat: "sfh_pipeline." + name for flat, name in flat_names.items()}
wrong = []
for n, (flat, name) in enumerate(sorted(flat_names.items())):
    old, new = "sfh_pipeline." + flat, "sfh_pipeline." + name
    # every other module by its old name first, the rest by its new name first
    if n % 2:
        first = importlib.import_module(old)
        exec(f"import {old}")
        second = importlib.import_module(new)
    else:
        second = importlib.import_module(new)
        first = importlib.import_module(old)
    exec(f"from sfh_pipeline import {flat} as third")
    same = first is second is third is getattr(sfh_pipeline, flat) is sys.modules[old] is sys.modules[new]
    named = second.__name__ == new and second.__spec__.name == new
    if not (same and named):
        wrong.append(f"{old}: same object {same}, named {second.__name__} / {second.__spec__.name}")
print("\\n".join(wrong))
"""


def test_every_flat_name_of_before_the_folders_is_the_module_of_its_folder():
    """``sfh_pipeline.model`` is ``sfh_pipeline.ml.model`` (not a copy: monkeypatching one patches
    the other), whichever is imported first, by ``import``, ``from``, importlib or attribute."""
    assert "model" in FLAT_NAMES and "cli" not in FLAT_NAMES  # sfh_pipeline.cli is the root command line
    done = _fresh_python("-W", "error", "-c", _SAME_MODULE, json.dumps(FLAT_NAMES))
    assert done.returncode == 0, done.stderr
    assert not done.stdout.strip(), "flat names that are not the module of their folder:\n" + done.stdout


def test_package_runs_as_a_module():
    done = _fresh_python("-m", PACKAGE, "--help")
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr


def test_the_layer_table_of_the_docs_is_the_folders():
    """docs/pipeline.md shows the layers to readers: it must list the folders' modules."""
    rows = {
        line.split("|")[1].strip(): re.findall(r"`(\w+)`", line.split("|")[2])
        for line in (ROOT / "docs" / "pipeline.md").read_text().splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in LAYER_ORDER
    }
    folders = {
        layer: sorted(path.stem for path in (SOURCE / layer).glob("*.py") if path.stem != "__init__")
        for layer in LAYER_ORDER
        if layer != TOP
    }
    folders[TOP] = sorted(path.stem for path in SOURCE.glob("*.py"))
    assert list(rows) == list(LAYER_ORDER), "the table's rows are the layers, lowest first"
    assert {layer: sorted(modules) for layer, modules in rows.items()} == folders
