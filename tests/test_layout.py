"""The house's layers: the core stands alone, imports flow one way, the Lightning module only wires hooks."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "clip_inversion"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def top_level_imports(path: Path) -> set[str]:
    """Every module a file imports at module level (not inside functions), as dotted names."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from package import module`
    return names


def test_no_import_cycle_among_the_packages_modules():
    graph = {name: {m for m in top_level_imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in graph[name]:
            assert state.get(target) != "open", " -> ".join([*trail, name, target])
            if target not in state:
                visit(target, [*trail, name])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_core_imports_neither_lightning_nor_the_toy_world():
    for name, path in MODULES.items():
        if name.startswith("clip_inversion.core"):
            imports = top_level_imports(path)
            assert not any(m.split(".")[0] == "lightning" for m in imports), name
            assert not any(m.startswith(("clip_inversion.toyworld", "clip_inversion.studies")) for m in imports), name


def test_the_lightning_module_only_wires_hooks_and_nothing_uses_private_trainer_state():
    assert len((PACKAGE / "module.py").read_text().splitlines()) <= 200
    for path in MODULES.values():
        assert "trainer._" not in path.read_text(), path
