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
