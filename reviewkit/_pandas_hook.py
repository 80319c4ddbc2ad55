"""Run a module's import right after pandas is imported, without importing pandas.

``import reviewkit`` must stay cheap and pandas-free (the watchdog runs without
pandas), yet ``df.reviewkit`` should work whichever of the two is imported first.
If pandas is already loaded the accessor module is imported now; otherwise a
one-shot meta-path finder wraps pandas' loader and imports it after pandas runs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Sequence


class _AfterPandasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, module_name: str) -> None:
        self.module_name = module_name

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "pandas":
            return None
        sys.meta_path.remove(self)  # one shot: let the normal finders locate pandas
        spec = importlib.util.find_spec("pandas")
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module
        module_name = self.module_name

        def exec_then_register(module: ModuleType) -> None:
            original_exec(module)
            importlib.import_module(module_name)

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def register_when_pandas_loads(module_name: str) -> None:
    """Import ``module_name`` now if pandas is loaded, else right after pandas loads."""
    if "pandas" in sys.modules:
        importlib.import_module(module_name)
        return
    if not any(isinstance(f, _AfterPandasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterPandasFinder(module_name))
