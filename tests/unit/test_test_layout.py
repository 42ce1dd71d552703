"""The layout of the tests themselves: what one test module needs of another lives in ``tests/support/``.

A test module imported by another is run, changed and broken through it: its fixtures, its module-level
set-up and its own imports come along, and renaming a test in it breaks a module that does not test it.
So no module under ``tests/`` imports a test module (``test_*.py``) or a ``conftest.py`` (pytest loads those
itself), and every shared helper sits in ``tests/support/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SUPPORT = TESTS / "support"


def _modules() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "node_modules" not in path.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(TESTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> list[tuple[int, str]]:
    """Each module ``path`` imports, with its line."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    return _imports_of(path.read_text(encoding="utf-8"), package)


def _imports_of(source: str, package: str) -> list[tuple[int, str]]:
    """Each module ``source`` imports (by ``import``, ``from … import`` or ``pytest_plugins``), as a dotted
    name, with its line: relative imports resolved against ``package``, names imported from a package counted
    as its modules."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytest_plugins" for target in node.targets
        ):
            found.extend(
                (node.lineno, element.value)
                for element in ast.walk(node.value)
                if isinstance(element, ast.Constant) and isinstance(element.value, str)
            )
    return found


def _is_test_module(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return name.startswith("tests.") and (last.startswith("test_") or last == "conftest")


def test_no_module_under_tests_imports_a_test_module_or_a_conftest() -> None:
    offences = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
        for path in _modules()
        for line, name in _imported(path)
        if _is_test_module(name)
    ]
    assert not offences, "move what is shared to tests/support/:\n" + "\n".join(offences)


def test_every_helper_module_lives_in_tests_support() -> None:
    stray = [
        str(path.relative_to(TESTS.parent))
        for path in _modules()
        if not path.name.startswith("test_")
        and path.name not in {"conftest.py", "__init__.py"}
        and SUPPORT not in path.parents
    ]
    assert not stray, "shared test helpers belong in tests/support/: " + ", ".join(stray)


@pytest.mark.parametrize(
    ("source", "offending"),
    [
        ("from tests.flows.test_enrollment_request import load_customers\n", True),
        ("from .test_event_reservation import prepare\n", True),
        ("import tests.e2e.test_cli\n", True),
        ("from tests.flows import test_enrollment_request\n", True),
        ("from tests.conftest import PostgresServer\n", True),
        ('pytest_plugins = ["tests.edge.test_vtn_end_to_end"]\n', True),
        ("from tests.support.enrollment import load_customers\n", False),
        ('pytest_plugins = ["tests.support.system"]\n', False),
        ("from derbridge.testing import test_clock\n", False),
    ],
)
def test_the_check_sees_each_way_of_importing_a_test_module(source: str, offending: bool) -> None:
    """The rule's own test: the check above, on a module that would stand in ``tests/flows/``."""
    names = [name for _, name in _imports_of(source, "tests.flows")]
    assert any(_is_test_module(name) for name in names) is offending, names
