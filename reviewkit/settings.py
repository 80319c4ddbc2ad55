"""Engine settings: arguments, then the seed's environment variables, then defaults.

Resolution is separate from loading so it can be inspected and tested without vLLM,
and so ``load()`` can tell "same settings, return the engine" from "different
settings, refuse" by comparing two plain values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

POD_DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"
EMBEDDED = "embedded"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class EngineSettings:
    """What an engine was loaded with; two equal settings mean the same engine."""

    model: str
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    # Any other ``vllm.LLM`` keyword arguments, as sorted (name, value) pairs.
    engine_options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @property
    def is_embedded(self) -> bool:
        return self.model == EMBEDDED

    @property
    def is_packaged(self) -> bool:
        """A model installed from PyPI and loaded by name (``embedded``, ``smollm2``)."""
        from reviewkit.embedded import PACKAGED

        return self.model in PACKAGED

    def llm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM`` (the model path is added by the engine)."""
        kwargs: dict[str, Any] = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": self.enable_prefix_caching,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        kwargs.update(dict(self.engine_options))
        return kwargs

    def describe(self) -> str:
        parts = [
            f"model={self.model!r}",
            f"tensor_parallel_size={self.tensor_parallel_size}",
            f"max_model_len={self.max_model_len}",
            f"enable_prefix_caching={self.enable_prefix_caching}",
        ]
        parts += [f"{k}={v!r}" for k, v in self.engine_options]
        return ", ".join(parts)


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool | None:
    """A true/false environment variable (``1/true/yes/on``, ``0/false/no/off`` or empty);
    None when unset. Anything else is an error naming the variable, not a silent default."""
    env = os.environ if env is None else env
    raw = env.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use true or false)")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be at least 1")
    return value


def cuda_gpu_count() -> int:
    """Count CUDA GPUs through NVML, without importing torch (cheap, and safe here)."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return 0


def default_model(env: Mapping[str, str] | None = None) -> str:
    """The model when none is named: the pod model on a CUDA GPU, else the embedded one.

    ``USE_POD_VLLM`` (the seed's switch) forces the choice: true means the pod model,
    false means the embedded one.
    """
    env = os.environ if env is None else env
    use_pod = env_flag("USE_POD_VLLM", env)
    if use_pod is None:
        use_pod = cuda_gpu_count() > 0
    return POD_DEFAULT_MODEL if use_pod else EMBEDDED


def resolve_settings(
    model: str | None = None,
    *,
    tensor_parallel_size: int | None = None,
    max_model_len: int | None = None,
    enable_prefix_caching: bool | None = None,
    env: Mapping[str, str] | None = None,
    **engine_options: Any,
) -> EngineSettings:
    """Settings in order: arguments, then ``LLM_MODEL``, ``VLLM_TENSOR_PARALLEL_SIZE``,
    ``VLLM_MAX_MODEL_LEN``, ``USE_POD_VLLM``, then defaults."""
    env = os.environ if env is None else env
    chosen_model = model or env.get("LLM_MODEL") or default_model(env)
    tp = tensor_parallel_size or _env_int(env, "VLLM_TENSOR_PARALLEL_SIZE") or 1
    max_len = max_model_len or _env_int(env, "VLLM_MAX_MODEL_LEN")
    if max_len is None:
        from reviewkit.embedded import PACKAGED

        if chosen_model in PACKAGED:  # plenty for reviews; keeps the CPU KV cache small
            max_len = PACKAGED[chosen_model].max_model_len
    if not isinstance(tp, int) or tp < 1:
        raise ValueError(f"tensor_parallel_size must be a positive integer, got {tp!r}")
    return EngineSettings(
        model=chosen_model,
        tensor_parallel_size=tp,
        max_model_len=max_len,
        enable_prefix_caching=True if enable_prefix_caching is None else bool(enable_prefix_caching),
        engine_options=tuple(sorted(engine_options.items())),
    )
