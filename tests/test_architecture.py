"""The package's layering, read from the source of the installed package with ``ast``: no
import cycle among its modules (imports inside functions included), and no module importing
another module's ``_private`` name (ARCHITECTURE.md)."""

import ast
import importlib
from pathlib import Path

# equinet's sub-packages that setuptools maps from other folders (pyproject.toml's package-dir).
SUBPACKAGES = ("equinet", "equinet.ops", "equinet.datasets", "equinet.potentials")


def _modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name → source file."""
    modules = {}
    for package in SUBPACKAGES:
        for root in importlib.import_module(package).__path__:
            for path in Path(root).rglob("*.py"):
                parts = path.relative_to(root).with_suffix("").parts
                name = ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
                modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]):
    """``(imported module, imported name or None)`` for every import in the module ``name``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule, None) if submodule in modules else (base, alias.name)


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    """The import graph among the package's modules, and the ``_private`` imports across them."""
    modules = _modules()
    graph, private = {}, []
    for name, path in modules.items():
        graph[name] = set()
        for module, imported in _imports(name, path, modules):
            if module not in modules or module == name:
                continue
            graph[name].add(module)
            if imported and imported.startswith("_") and not imported.endswith("__"):
                private.append(f"{name} imports {imported} from {module}")
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_walk_sees_every_layer():
    graph, _ = _graph()
    assert {"equinet.cli", "equinet.ops.kernels", "equinet.ops.gaunt.product", "equinet.datasets", "equinet.potentials.mace"} <= set(graph)
    assert "equinet.ops.kernels" in graph["equinet.ops.cg"]


def test_no_import_cycle_among_the_package_modules():
    assert _cycles(_graph()[0]) == []


def test_no_module_imports_a_private_name_of_another():
    assert _graph()[1] == []


def test_ops_imports_nothing_from_the_layers_above():
    graph, _ = _graph()
    above = [f"{name} imports {module}" for name, modules in graph.items() if name.startswith("equinet.ops")
             for module in modules if not module.startswith("equinet.ops")]  # fmt: skip
    assert above == []


def test_the_backends_never_import_the_operator_modules():
    # ops/kernels is a leaf: plain descriptions of the work (irreps, blocks, bases, grid matrices) only.
    graph, _ = _graph()
    operators = {"equinet.ops.cg", "equinet.ops.so2", "equinet.ops.symmetric_contraction", "equinet.ops.gaunt.product",
                 "equinet.ops.gaunt.tensor_product", "equinet.ops.gaunt.many_body"}  # fmt: skip
    wrong = [f"{name} imports {module}" for name, modules in graph.items() if name.startswith("equinet.ops.kernels")
             for module in modules & operators]  # fmt: skip
    assert wrong == []
