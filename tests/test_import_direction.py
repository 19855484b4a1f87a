"""Imports between the project's layers go one way only (docs/architecture.md, "Layers and imports").

Every ``import`` statement of the project's packages is read from the source, including those inside functions, so
a dependency cannot hide in a function body.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lightning_modules", "datamodules", "callbacks", "experiments")

# Layer of a module, from the most specific prefix; what each layer may import besides itself.
LAYER_PREFIXES = {
    "lightning_modules.diffusion": "diffusion math",
    "lightning_modules.nets": "networks",
    "lightning_modules.conditioning": "conditions",
    "lightning_modules.metrics": "metrics",
    "lightning_modules.official": "official checkpoints",
    "lightning_modules": "lightning modules",
    "datamodules": "data",
    "callbacks": "callbacks",
    "experiments": "experiments",
}
ALLOWED = {
    "diffusion math": set(),
    "networks": set(),
    "conditions": set(),
    "metrics": set(),
    "data": set(),
    "official checkpoints": {"networks", "conditions"},
    "lightning modules": {"diffusion math", "networks", "conditions", "metrics", "official checkpoints", "data"},
    "callbacks": {"lightning modules", "diffusion math", "networks", "conditions", "metrics", "data"},
    "experiments": set(LAYER_PREFIXES.values()),
}


def layer_of(module: str) -> str | None:
    for prefix, layer in LAYER_PREFIXES.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of the modules ``source`` imports (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
    return names


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


SOURCES = sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    assert SOURCES and all(layer_of(module_name(path)) for path in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(REPO)))
def test_imports_follow_the_layer_direction(path):
    layer = layer_of(module_name(path))
    wrong = sorted(
        f"{name} ({layer_of(name)})"
        for name in imported_modules(path.read_text(), package_of(path))
        if layer_of(name) not in (None, layer) and layer_of(name) not in ALLOWED[layer]
    )
    assert not wrong, f"{path.relative_to(REPO)} ({layer}) imports against the layer direction: {wrong}"


def test_the_rule_catches_an_upward_import_hidden_in_a_function():
    source = "def build():\n    from ..sdm import SDMLitModule\n    return SDMLitModule\n"
    names = imported_modules(source, "lightning_modules.nets")
    assert "lightning_modules.sdm" in names
    assert layer_of("lightning_modules.sdm") not in ALLOWED[layer_of("lightning_modules.nets.sdm_unet")]
