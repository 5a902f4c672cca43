"""Layering (docs/architecture.md): a package imports only packages of its own layer or a lower
one. Every import statement of every module counts, those inside functions and under
TYPE_CHECKING too: each is a dependency a reader has to follow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "slotlab"

#: The layer of each package (a module of slotlab/ such as config.py counts as a package); the
#: table of docs/architecture.md. ``io.importers`` reads methods, so it sits above them.
LAYERS = {
    "ops": 0, "config": 0, "data": 0, "io": 0,
    "nn": 1, "diffusion": 1, "datagen": 1, "metrics": 1,
    "methods": 2,
    "train": 3, "viz": 3, "io.importers": 3,
    "cli": 4,
}  # fmt: skip


def package_of(module: str) -> str:
    """``slotlab.io.importers.x`` -> ``io.importers``; ``slotlab.nn.encoders`` -> ``nn``."""
    parts = module.split(".")[1:]
    if parts[:2] == ["io", "importers"]:
        return "io.importers"
    return parts[0] if parts else "slotlab"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported slotlab module) of every absolute import of slotlab in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "slotlab":  # from slotlab import io
                found += [(node.lineno, f"slotlab.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return sorted((line, name) for line, name in found if name.startswith("slotlab."))


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def source_package(path: Path) -> str:
    return package_of(".".join(("slotlab", *path.relative_to(PACKAGE).with_suffix("").parts)))


def test_every_package_has_a_layer():
    unknown = sorted({source_package(p) for p in modules()} - set(LAYERS))
    assert not unknown, f"packages without a layer: {unknown}; add them to LAYERS and to docs/architecture.md"


def test_no_package_imports_a_higher_layer():
    offending = []
    for path in modules():
        source = source_package(path)
        for line, name in imports(path):
            target = package_of(name)
            if LAYERS.get(target, -1) > LAYERS[source]:
                offending.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} ({target}, layer "
                                 f"{LAYERS[target]}) from {source} (layer {LAYERS[source]})")
    assert not offending, "imports climbing up a layer:\n" + "\n".join(offending)


@pytest.mark.parametrize("lower, higher", [
    ("nn", "methods"), ("nn", "train"), ("nn", "cli"), ("metrics", "methods"), ("metrics", "train"),
])
def test_the_named_rules_follow_from_the_layers(lower, higher):
    assert LAYERS[lower] < LAYERS[higher]


def test_an_upward_import_is_found(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from slotlab.methods.glass import Glass\n    return Glass\n"
                      "from slotlab import train\n")
    assert imports(module) == [(2, "slotlab.methods.glass"), (4, "slotlab.train")]
    assert [package_of(name) for _, name in imports(module)] == ["methods", "train"]
