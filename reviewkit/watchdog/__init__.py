"""GPU- and notebook-aware idle watchdog for RunPod pods.

RunPod has no idle stop for pods, so a forgotten pod bills until the balance runs
out. The watchdog checks a few signals of work (GPU utilisation, Jupyter kernels,
reviewkit's activity file, an optional health URL) and stops the pod through the
runpod SDK once all of them have been idle for ``idle_limit`` consecutive checks
and the pod has run for ``min_runtime`` seconds.

Modules: :mod:`.signals` (what counts as work), :mod:`.policy` (idle counting and
the seed's presets), :mod:`.state` (cron-mode state file), :mod:`.action` (runpod
SDK calls), :mod:`.trace` and :mod:`.simulate` (replaying recorded utilisation),
:mod:`.monitor` (one check), :mod:`.cli` (the command line).

Importing this package imports neither vllm, torch, pandas nor numpy.
"""

from reviewkit.watchdog.policy import PRESETS, IdlePolicy
from reviewkit.watchdog.simulate import SimulationResult, simulate

__all__ = ["PRESETS", "IdlePolicy", "SimulationResult", "simulate"]
