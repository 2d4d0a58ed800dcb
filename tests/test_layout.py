"""The package's architecture: imports run one way through its layers, no import cycles, small modules."""
import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "floss_core"
MAX_LINES = 400

# floss_core's layers, lowest first: a module imports only from its own layer's package or from lower layers.
LAYERS = [
    ["_source", "checks", "rng"],
    ["tasks", "ensemble"],
    ["cells"],
    ["spectrum"],
    ["flossing"],
    ["training"],
    ["diagnostics", "adapters"],
    ["experiments"],
    ["repro"],
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules():
    """{dotted module name: path} of every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path) -> set:
    """The floss_core modules ``name`` imports, with the packages whose ``__init__`` that import runs."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            found.add(".".join(target))
            found.update(".".join(target + [a.name]) for a in node.names)  # `from . import adapters`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    known = modules()
    out = set()
    for target in found:
        parts = target.split(".")
        for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ too
            if ".".join(parts[:i]) in known:
                out.add(".".join(parts[:i]))
    out.discard(name)
    return {t for t in out if not name.startswith(t + ".")}  # a module's own packages are already importing


def graph() -> dict:
    return {name: imports(name, path) for name, path in modules().items()}


def test_the_package_has_no_import_cycles():
    try:
        list(graphlib.TopologicalSorter(graph()).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def test_imports_run_one_way_through_the_layers():
    wrong = []
    for name, targets in graph().items():
        parts = name.split(".")
        if len(parts) < 2:  # floss_core/__init__.py re-exports the public API
            continue
        layer = LAYER_OF[parts[1]]
        for target in targets:
            tparts = target.split(".")
            if len(tparts) < 2:
                wrong.append(f"{name} imports the top-level package")
            elif LAYER_OF[tparts[1]] > layer or (LAYER_OF[tparts[1]] == layer and tparts[1] != parts[1]):
                wrong.append(f"{name} (layer {parts[1]}) imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_every_module_is_in_a_layer():
    assert {name.split(".")[1] for name in modules() if "." in name} <= set(LAYER_OF)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_400_lines(name):
    n = len(modules()[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines (> {MAX_LINES}): split it by concept"
