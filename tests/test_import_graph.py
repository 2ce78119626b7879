"""No import cycle anywhere in gradtx: every module's module-level imports form a graph without loops.

A submodule importing its parent package (``from gradtx import _tree``) names the
submodule it takes, not the package; imports under ``if TYPE_CHECKING:`` and
inside functions are not module-level and are left out.
"""

import ast
import pathlib

import gradtx

ROOT = pathlib.Path(gradtx.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(kept + ([node.module] if node.module else []))
                submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
                found |= submodules
                if len(submodules) < len(node.names):
                    found.add(base)
    return {m for m in found if m in modules and m != name}


def test_gradtx_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycles.append(" -> ".join(path[path.index(other):] + [name, other]))
            elif other not in state:
                visit(other, path + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert "gradtx.optim._optimizer" in graph and graph["gradtx.optim._optimizer"]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
