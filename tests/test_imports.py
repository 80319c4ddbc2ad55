"""Importing reviewkit is cheap; df.reviewkit exists whatever the import order."""

import json

from rk_support import run_python

HEAVY = ("vllm", "torch", "pandas", "numpy", "transformers")


def _loaded_after(code: str) -> dict:
    proc = run_python(code + f"\nimport sys, json\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_reviewkit_loads_no_heavy_module():
    assert not any(_loaded_after("import reviewkit").values())


def test_import_watchdog_package_loads_no_heavy_module():
    assert not any(_loaded_after("import reviewkit.watchdog.cli, reviewkit.activity").values())


def test_accessor_registered_when_pandas_comes_first():
    proc = run_python("import pandas as pd, reviewkit\nprint(hasattr(pd.DataFrame(), 'reviewkit'))")
    assert proc.stdout.strip() == "True", proc.stderr


def test_accessor_registered_when_pandas_comes_after():
    proc = run_python("import reviewkit\nimport pandas as pd\nprint(hasattr(pd.DataFrame(), 'reviewkit'))")
    assert proc.stdout.strip() == "True", proc.stderr


def test_unknown_attribute_is_an_attribute_error():
    proc = run_python("import reviewkit\ntry:\n    reviewkit.nope\nexcept AttributeError as e:\n    print('ok', e)")
    assert proc.stdout.startswith("ok"), proc.stderr


def test_missing_vllm_names_the_extra_to_install():
    code = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == 'vllm' or name.startswith('vllm.'):
            raise ImportError('No module named ' + repr(name))
sys.meta_path.insert(0, Block())
import reviewkit
try:
    reviewkit.load('embedded')
except ImportError as e:
    print('IMPORT-ERROR', e)
"""
    proc = run_python(code)
    assert "IMPORT-ERROR" in proc.stdout, proc.stderr
    assert "reviewkit[gpu]" in proc.stdout and "reviewkit[cpu]" in proc.stdout


def _imports(path, package: str, modules) -> set[str]:
    """The ``modules`` that ``path`` imports, at module level or inside functions.

    ``from pkg import name`` imports ``pkg.name`` when that is a module, else ``pkg`` itself.
    """
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package (its __init__) or a sibling
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return found & set(modules)


def _import_circles(root, start: str) -> list[list[str]]:
    """Import circles through modules under ``start`` (a package of ``root``), lazy imports included."""
    files = {}
    for path in (root / "reviewkit").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    todo = [m for m in files if m == start or m.startswith(start + ".")]
    while todo:
        module = todo.pop()
        if module in graph:
            continue
        path = files[module]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        graph[module] = _imports(path, package, files) - {module}
        todo += graph[module]
    circles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        for nxt in sorted(graph[module]):
            if nxt in path:
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(module)

    for module in sorted(graph):
        if module.startswith(start) and module not in done:
            visit(module, [module])
    return [c for c in circles if any(m.startswith(start) for m in c)]


def test_no_import_circle_in_the_watchdog():
    """cli.py and commands.py once imported each other (inside functions): no circle may come back."""
    from rk_support import ROOT

    assert _import_circles(ROOT, "reviewkit.watchdog") == []
