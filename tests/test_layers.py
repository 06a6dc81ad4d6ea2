"""The layers of ``shared/`` (see shared/__init__.py): each imports only those below it,
and ``shared`` never imports ``services``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What each layer may import from the common package (besides itself).
ALLOWED: dict[str, set[str]] = {
    "kernel": set(),
    "eventstore": {"kernel"},
    "readmodels": {"kernel", "eventstore"},
    "app": {"kernel", "eventstore", "readmodels", "http"},
    "http": {"kernel", "eventstore", "readmodels", "app"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_shared_layers_import_only_downwards() -> None:
    wrong: list[str] = []
    for layer, allowed in ALLOWED.items():
        for path in (ROOT / "shared" / layer).rglob("*.py"):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "services":
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
                if parts[0] != "shared" or len(parts) < 2:
                    continue
                if parts[1] != layer and parts[1] not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_every_shared_module_belongs_to_a_layer() -> None:
    loose = [p.name for p in (ROOT / "shared").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a layer: {loose}"
