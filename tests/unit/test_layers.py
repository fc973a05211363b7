"""The layers of lib/linstor_un (docs/architecture.md) as a checked rule: which modules each module
may import at run time. It answers "what may this module touch" for the next engineer, and fails
when a change makes a lower layer reach up (an operation imported by the LINSTOR side, python-linstor
imported outside linstor_api...). Imports for type checking only (`if TYPE_CHECKING:`) are free."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib" / "linstor_un"

SHARED = {"errors", "validate", "names", "deadline", "report"}
LAYERS = {
    "shared": SHARED,
    "oned": {"one_input", "one_api", "images", "settings"},
    "linstor": {"linstor_api", "placement", "holders", "attach"},
    "hosts": {"remote", "host_ops", "backup_host", "qcow2_host"},
    "rules": {"ownership", "rollback", "disks", "context"},
    "frame": {"action", "stats"},
}
# what each layer may import besides itself and the shared modules
MAY_USE = {
    "shared": set(),
    "oned": {"ownership", "linstor_api"},                   # images: whose a DS request's volume is
    "linstor": {"settings"},                                # the connection and placement settings
    "hosts": set(),
    "rules": {"one_api", "linstor_api", "settings", "attach", "host_ops", "remote"},
    "frame": LAYERS["oned"] | LAYERS["linstor"] | LAYERS["hosts"] | LAYERS["rules"],
}
EXTERNAL_OWNERS = {"linstor": {"linstor_api"}, "xmlrpc": {"one_api"}, "paramiko": {"remote"}}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(LIB).with_suffix("").parts)


def layer_of(module: str) -> str:
    return next((name for name, members in LAYERS.items() if module in members), "operations")


def runtime_imports(path: Path) -> tuple[set[str], set[str]]:
    """(linstor_un modules, external top-level packages) `path` imports outside TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    package = module_name(path).split(".")[:-1]
    inner, outer = set(), set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            outer.update(a.name.split(".")[0] for a in node.names if not a.name.startswith("linstor_un"))
            inner.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("linstor_un."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join((package[:len(package) - node.level + 1] if node.level > 1 else package)
                                + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "linstor_un":
                base = node.module[len("linstor_un"):].lstrip(".")
            else:
                outer.add((node.module or "").split(".")[0])
                continue
            if base:
                inner.add(base)
            else:
                inner.update(a.name for a in node.names)
    return {m.split(".")[0] if not m.startswith("ops.") else m for m in inner}, outer


MODULES = sorted(LIB.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_each_module_imports_only_what_its_layer_may(path):
    module = module_name(path)
    layer = layer_of(module)
    inner, outer = runtime_imports(path)
    if layer != "operations":
        allowed = SHARED | LAYERS[layer] | MAY_USE[layer]
        reaching_up = sorted(m for m in inner if m not in allowed and m != "__init__")
        assert not reaching_up, f"{module} ({layer} layer) imports {reaching_up}"
    for package, owners in EXTERNAL_OWNERS.items():
        assert package not in outer or module in owners, f"{module} imports {package}: only {owners} may"


def test_no_library_module_imports_an_action_s_own_operation():
    for path in MODULES:
        if module_name(path).startswith("ops."):
            continue
        inner, _ = runtime_imports(path)
        assert not any(m.startswith("ops.") or m == "ops" for m in inner), module_name(path)


def test_every_module_has_a_layer_the_architecture_page_names():
    text = (LIB.parents[1] / "docs" / "architecture.md").read_text()
    for path in MODULES:
        name = module_name(path).split(".")[-1]
        if name != "__init__":
            assert name in text, f"docs/architecture.md does not say where {name} belongs"
