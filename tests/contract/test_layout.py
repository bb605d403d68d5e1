"""The package layout's rules, read from the source: imports point one way and form no cycle.

contract <- pem <- export <- calib <- workflows, and runtime depends on contract alone (never torch,
pem, export or calib). Inside runtime: errors <- core <- io <- tools (:data:`RUNTIME_LAYERS`).
Function-level (lazy) imports count too: a cycle hidden inside a function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "pem", "export", "calib", "runtime", "workflows", "commands")
# What each package may import of ours (besides itself).
ALLOWED = {
    "contract": set(),
    "pem": {"contract"},
    "export": {"contract", "pem", "runtime"},
    "calib": {"contract", "pem", "export", "runtime"},
    "runtime": {"contract"},
    "workflows": {"contract", "pem", "export", "calib", "runtime"},
    # The CLI's commands: they parse, delegate and print (imports of heavy packages stay lazy).
    "commands": {"contract", "pem", "export", "calib", "runtime", "workflows"},
}
# Layers inside a package: a sub-package on top of the rest of its package, and the only modules
# of that package besides its own that may import it. Training uses evaluation (its periodic and
# final evaluation), so evaluation must not use training; the zoo trains the default tiny model.
TOP_SUBPACKAGES = {
    "pem.train": {"pem.zoo"},
}

# The runtime's layers, each with the layers it may import: the inference core reads no files of
# its own and knows no tool; io (files, cameras, bags, fleets) builds on the core; the tools (engine
# build, bench, verify and the comparison engine) build on both, since comparisons read image
# files. ``runtime`` itself (its __init__) re-exports the core. Every runtime module is in one.
RUNTIME_LAYERS = {
    "runtime.errors": set(),
    "runtime.core": {"runtime.errors"},
    "runtime.io": {"runtime.errors", "runtime.core"},
    "runtime.tools": {"runtime.errors", "runtime.core", "runtime.io"},
    "runtime": {"runtime.errors", "runtime.core"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``path`` imports anywhere in its body."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in modules}


MODULES = _modules()
GRAPH = {name: _imports(path, MODULES) - {name} for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module: str) -> None:
    package = module.split(".")[0]
    wrong = sorted(m for m in GRAPH[module] if m.split(".")[0] not in ALLOWED[package] | {package})
    assert not wrong, f"{module} imports {wrong}"


def _sub_package_violations(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a :data:`TOP_SUBPACKAGES` entry from below it."""
    wrong = []
    for top, allowed in TOP_SUBPACKAGES.items():
        package = top.rsplit(".", 1)[0]
        for module, deps in sorted(graph.items()):
            inside = module == top or module.startswith(top + ".")
            if inside or module in allowed or not module.startswith(package + "."):
                continue
            wrong += [f"{module} -> {d}" for d in sorted(deps) if d == top or d.startswith(top + ".")]
    return wrong


def test_sub_packages_stay_on_top() -> None:
    assert not _sub_package_violations(GRAPH)


def test_sub_package_rule_catches_evaluation_importing_training() -> None:
    # The rule above must see the import this layering removed (pem.evaluation -> pem.train.*).
    graph = {**GRAPH, "pem.evaluation": GRAPH["pem.evaluation"] | {"pem.train.config"}}
    assert _sub_package_violations(graph) == ["pem.evaluation -> pem.train.config"]


def _runtime_layer(module: str) -> str | None:
    """The :data:`RUNTIME_LAYERS` entry ``module`` belongs to (the longest that contains it)."""
    inside = [layer for layer in RUNTIME_LAYERS if module == layer or module.startswith(layer + ".")]
    return max(inside, key=len, default=None)


def _runtime_layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every runtime import that goes up or sideways a layer."""
    wrong = []
    for module, deps in sorted(graph.items()):
        layer = _runtime_layer(module)
        if layer is None:
            continue
        for dep in sorted(deps):
            dep_layer = _runtime_layer(dep)
            if dep_layer is not None and dep_layer != layer and dep_layer not in RUNTIME_LAYERS[layer]:
                wrong.append(f"{module} -> {dep}")
    return wrong


def test_runtime_layers_point_down() -> None:
    assert not _runtime_layer_violations(GRAPH)


def _loose_runtime_modules(modules: list[str]) -> list[str]:
    """Runtime modules beside the sub-packages rather than in one (``runtime.errors`` aside)."""
    return [m for m in modules if m.startswith("runtime.") and _runtime_layer(m) == "runtime"]


def test_every_runtime_module_is_in_a_sub_package() -> None:
    # runtime/ stays core / io / tools: a new module goes into one of them, not beside them.
    assert not _loose_runtime_modules(sorted(MODULES))
    assert _loose_runtime_modules([*MODULES, "runtime.helpers"]) == ["runtime.helpers"]


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("runtime.core.segmenter", "runtime.io.images"),  # the core reading files
        ("runtime.core.artifact", "runtime.tools.engine_build"),  # the core using a tool
        ("runtime.io.batch_infer", "runtime.tools.compare.engine"),  # io using a tool
        ("runtime.errors", "runtime.core.artifact"),  # the error root depending on anything
    ],
)
def test_runtime_layer_rule_catches(importer: str, imported: str) -> None:
    graph = {**GRAPH, importer: GRAPH[importer] | {imported}}
    assert _runtime_layer_violations(graph) == [f"{importer} -> {imported}"]


def test_runtime_layer_rule_allows_downward_imports() -> None:
    graph = {**GRAPH, "runtime.tools.bench": GRAPH["runtime.tools.bench"] | {"runtime.io.sources"}}
    assert not _runtime_layer_violations(graph)


def test_no_import_cycle() -> None:
    # A package's __init__ importing its submodules is how packages work; a cycle between two
    # real modules (or through an __init__ that a submodule imports back) is what we refuse.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(GRAPH[name]):
            if dep.startswith(name + "."):
                continue  # a package re-exporting its own submodules
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_runtime_and_contract_never_import_torch() -> None:
    for name, path in MODULES.items():
        if name.split(".")[0] not in ("runtime", "contract"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] == "torch"]
            elif isinstance(node, ast.ImportFrom):
                bad = [node.module] if node.module and node.module.split(".")[0] == "torch" else []
            else:
                continue
            assert not bad, f"{name} imports {bad}"
