"""The arrows between shoal's packages are the ones docs/architecture.md allows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "shoal"


def allowed_arrows() -> dict[str, set[str]]:
    """The table under "The arrows allowed": package -> what it may import."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## The arrows allowed", 1)[1].split("\n## ", 1)[0]
    arrows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and (name := re.fullmatch(r"`(\w+)`", cells[0])):
            arrows[name[1]] = set(re.findall(r"`(\w+)`", cells[1]))
    return arrows


def unit_of(module: str) -> str:
    """The package a module belongs to: shoal.engine.log -> engine; shoal.dump ->
    dump; shoal and shoal.__main__ -> shoal."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else "shoal"


def imports() -> set[tuple[str, str, str]]:
    """(importing module's file, its package, the imported package) for every
    import of shoal inside shoal, at any depth of a module."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        source = unit_of(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
                if node.module == "shoal":  # from shoal import errors: the submodule
                    targets = [f"shoal.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "shoal" or target.startswith("shoal."):
                    imported = unit_of(target)
                    if imported != source:
                        found.add((str(path.relative_to(ROOT)), source, imported))
    return found


def test_the_table_names_every_package() -> None:
    packages = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    packages -= {"__init__", "__main__", "__pycache__"}
    assert set(allowed_arrows()) == packages | {"shoal"}


def test_every_import_is_an_allowed_arrow() -> None:
    arrows = allowed_arrows()
    wrong = sorted(
        f"{path}: {source} -> {imported}"
        for path, source, imported in imports()
        if imported not in arrows[source]
    )
    assert not wrong, "imports the architecture does not allow:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "imported"), [("engine", "server"), ("client", "server"), ("cluster", "server")]
)
def test_a_layer_never_reaches_up(source: str, imported: str) -> None:
    """The checks above are only as good as the table: these arrows stay out of it."""
    assert imported not in allowed_arrows()[source]
