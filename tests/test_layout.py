"""The test suite's own layout: shared machinery lives in tests/support, and no test module
imports another test module or conftest.py (pytest imports those itself, and a helper that
two modules need belongs in tests/support)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: what no module of tests/ may import: the test modules and conftest
FORBIDDEN = {p.stem for p in TESTS.glob("test_*.py")} | {"conftest"}


def forbidden_imports(source: str, forbidden: set[str] = FORBIDDEN) -> list[str]:
    """The imports of test modules or conftest in ``source``, as 'line: module', at any depth
    (imports inside functions count too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in forbidden or (parts[0] == "tests" and set(parts[1:]) & forbidden):
                    found.append(f"{node.lineno}: {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".") if node.module else []
            ours = node.level > 0 or parts[:1] == ["tests"] or (parts[:1] and parts[0] in forbidden)
            if not ours:
                continue
            # from .test_x import f / from tests.conftest import X / from . import test_x
            names = set(parts) | ({alias.name for alias in node.names} if len(parts) <= 1 else set())
            if names & forbidden:
                found.append(
                    f"{node.lineno}: {'.' * node.level}{node.module or ''} import "
                    f"{', '.join(alias.name for alias in node.names)}"
                )
    return found


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from .test_phangs import write_cube", True),
        ("from .conftest import TINY_MODEL", True),
        ("from tests.test_validate import line_library", True),
        ("from . import test_mock", True),
        ("from tests import conftest", True),
        ("import tests.test_workflow", True),
        ("def f():\n    from .test_forward_check import library_with_aging_lines\n", True),
        ("from .support.workflow import REPO, check_galaxy_products", False),
        ("from .support import ssp_fixtures as fx", False),
        ("from tests.support.http_server import LoopbackServer", False),
        ("from sfh_pipeline.training import train", False),
    ],
)
def test_the_check_tells_test_module_imports_from_support_imports(source, flagged):
    forbidden = {"test_phangs", "test_validate", "test_mock", "test_workflow", "test_forward_check", "conftest"}
    assert bool(forbidden_imports(source, forbidden)) is flagged


def test_no_test_module_imports_another_test_module_or_conftest():
    modules = sorted(TESTS.glob("test_*.py")) + [TESTS / "conftest.py"] + sorted((TESTS / "support").glob("*.py"))
    assert len(modules) > 30
    offenders = {
        str(path.relative_to(TESTS)): found for path in modules if (found := forbidden_imports(path.read_text()))
    }
    assert not offenders, f"move the shared helpers to tests/support: {offenders}"
