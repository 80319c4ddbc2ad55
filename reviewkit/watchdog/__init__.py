"""GPU- and notebook-aware idle watchdog for RunPod pods.

RunPod has no idle stop for pods, so a forgotten pod bills until the balance runs
out. The watchdog checks a few signals of work (GPU utilisation, Jupyter kernels,
reviewkit's activity file, an optional health URL) and stops the pod through the
runpod SDK once all of them have been idle for ``idle_limit`` consecutive checks
and the pod has run for ``min_runtime`` seconds.

Modules: :mod:`.signals`, :mod:`.gpu` and :mod:`.jupyter` (what counts as work),
:mod:`.policy` and :mod:`.peak` (idle counting, peak hours), :mod:`.optiontable`
(every option, its default and the seed's presets, defined once), :mod:`.state`
(state file and its lock), :mod:`.action` (runpod SDK calls), :mod:`.trace` and
:mod:`.simulate` (replaying recorded utilisation), :mod:`.monitor` (one check),
:mod:`.options` and :mod:`.cli` (the command line), :mod:`.commands`
(``start``/``stop``/``status``), :mod:`.logs` (the log format), :mod:`.report`
(:func:`status` for notebooks).

Importing this package imports neither vllm, torch, pandas nor numpy.
"""

from reviewkit.watchdog.policy import PRESETS, IdlePolicy
from reviewkit.watchdog.report import WatchdogStatus, status
from reviewkit.watchdog.simulate import SimulationResult, simulate

__all__ = ["PRESETS", "IdlePolicy", "SimulationResult", "WatchdogStatus", "simulate", "status"]
