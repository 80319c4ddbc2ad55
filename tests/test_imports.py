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


# -- the package's layers: every import goes down (or sideways inside a layer), never up --------

#: Modules by layer, lowest first; a module may import its own layer and the ones below. A
#: name covers its submodules unless one of them is listed itself (the longest name wins).
LAYERS = (
    (
        "reviewkit._version",
        "reviewkit._pandas_hook",
        "reviewkit.atomicfile",
        "reviewkit.activity",
        "reviewkit.runstats",
        "reviewkit.loadstatus",
        "reviewkit.cost",
        "reviewkit.evaluation",
    ),
    ("reviewkit.watchdog",),
    (
        "reviewkit.settings",
        "reviewkit.embedded",
        "reviewkit.prompts",
        "reviewkit.cache_db",
        "reviewkit.cache",
        "reviewkit.samples",
        "reviewkit.aspect_prompts",
    ),
    ("reviewkit.engines", "reviewkit.vllm_server"),
    ("reviewkit.isolation",),
    ("reviewkit.scoring",),
    ("reviewkit.aspects",),
    ("reviewkit.process_engine",),
    ("reviewkit.analysis", "reviewkit.summary", "reviewkit.plots", "reviewkit.seed_api", "reviewkit.accessor"),
    ("reviewkit.serve", "reviewkit.ray"),
    ("reviewkit", "reviewkit.cli", "reviewkit.__main__", "reviewkit.serve.__main__"),
)


def _package_imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports, lazy imports included."""
    import ast

    from rk_support import ROOT

    modules = {}
    for path in (ROOT / "reviewkit").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = {f"{base}.{a.name}" for a in node.names}
                # ``from package import module`` imports the module; any other name comes from
                # the package itself (``from reviewkit import load``: the public API at the top).
                found |= names if names <= set(modules) else names | {base}
        graph[name] = {resolve(t) for t in found if t.split(".")[0] == "reviewkit"} - {name}
    return graph


def _layer(module: str) -> int:
    names = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}
    while module not in names:
        assert "." in module, f"{module} is in no layer of tests/test_imports.py: place it there"
        module = module.rpartition(".")[0]
    return names[module]


def test_every_import_goes_down_the_layers():
    graph = _package_imports()
    upward = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in graph.items()
        for t in targets
        if _layer(t) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_circle():
    graph = _package_imports()
    circles = []
    for start in graph:  # depth-first search for a path back to the start
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not circles, "\n".join(sorted(set(circles)))
