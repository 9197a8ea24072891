"""Drivers import nothing from the gateway but its SDK, ``gateway.driver_api``.

A fast guard beside the import contract: every module under ``drivers/`` is parsed
(never imported) and each ``import``/``from … import`` naming ``gateway`` or one of
its submodules other than ``gateway.driver_api`` fails the test, wherever it stands
(inside a function, under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast

from tests.support.paths import REPO_ROOT

DRIVERS = REPO_ROOT / "drivers"
ALLOWED = "gateway.driver_api"


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``tree``; ``from gateway import x``
    counts as ``gateway.x``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module == "gateway":
                found.extend((node.lineno, f"gateway.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return sorted(found)


def _forbidden(tree: ast.AST) -> list[tuple[int, str]]:
    return [
        (line, module)
        for line, module in _imported(tree)
        if (module == "gateway" or module.startswith("gateway.")) and module != ALLOWED
    ]


def test_drivers_import_only_the_driver_api() -> None:
    modules = sorted(DRIVERS.rglob("*.py"))
    assert len(modules) > 10, "the drivers package was not found"
    offences = [
        f"{path.relative_to(REPO_ROOT)}:{line}: imports {module}"
        for path in modules
        for line, module in _forbidden(ast.parse(path.read_bytes(), str(path)))
    ]
    assert not offences, "drivers may import only gateway.driver_api:\n" + "\n".join(offences)


def test_the_guard_catches_every_form_of_import() -> None:
    source = (
        "import gateway.core.capture\n"
        "from gateway.dicom import photo\n"
        "from gateway import config\n"
        "from gateway import driver_api\n"
        "from gateway.driver_api import Backoff\n"
        "import gateway.driver_api\n"
        "def later():\n"
        "    from gateway.core.backoff import Backoff\n"
        "from . import sibling\n"
        "import gatewayish\n"
    )
    assert [module for _line, module in _forbidden(ast.parse(source))] == [
        "gateway.core.capture",
        "gateway.dicom",
        "gateway.config",
        "gateway.core.backoff",
    ]
