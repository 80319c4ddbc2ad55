"""The measured paths on one engine: reviewkit's ``analyze`` and the raw engine's ceiling.

The raw engine prefills the very prompt token ids reviewkit builds (reviewkit's own
``build_templates``/``build_prompts``), so the two differ only by what reviewkit adds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any


def reviewkit_prompts(engine: Any, texts: Sequence[str]) -> list[list[int]]:
    """The prompt token ids reviewkit sends for ``texts``: reviewkit's own prompt assembly."""
    from reviewkit.scoring import build_prompts, build_templates

    return build_prompts(engine, build_templates(engine), list(texts))[1]


def prefix_tokens_of(engine: Any) -> int:
    """Tokens of the longest shared (block-padded) prefix of reviewkit's prompts."""
    from reviewkit.scoring import build_templates

    return max(len(b.prefix_ids) for b in build_templates(engine).values())


def prefix_prompts(engine: Any) -> list[list[int]]:
    """One short prompt per reviewkit route: warms exactly the shared prefixes."""
    from reviewkit.scoring import build_templates

    return [b.prompt_ids([]) for b in build_templates(engine).values()]


def reset_prefix_cache(engine: Any, warm: Callable[[], Any] | None = None) -> None:
    """Forget every cached block, then compute only the shared prefix(es) ``warm`` sends."""
    try:
        engine.llm.reset_prefix_cache()
    except Exception as exc:  # pragma: no cover - depends on the vLLM version
        print(f"warning: reset_prefix_cache failed ({exc}); later phases may get cache hits", file=sys.stderr)
    if warm is not None:
        warm()


def run_reviewkit(texts: Sequence[str], *, cache: Any, chunk_size: int | None) -> dict[str, Any]:
    import pandas as pd

    import reviewkit

    options = {"chunk_size": chunk_size} if chunk_size else {}
    out = reviewkit.analyze(
        pd.DataFrame({"content": list(texts)}), text="content", cache=cache, progress=False, **options
    )
    stats = reviewkit.last_run()
    return {
        "out": out,
        "prompt_tokens": stats.prompt_tokens,
        "cached_tokens": stats.cached_prompt_tokens,
        "computed": stats.computed,
        "cached_rows": stats.cached,
        "engine_seconds": stats.engine_seconds,
    }


def run_raw_engine(engine: Any, prompts: Sequence[Any]) -> dict[str, Any]:
    """The ceiling: ``llm.generate`` of ready-made TokensPrompts, max_tokens=1, no logprobs."""
    from vllm import SamplingParams

    outputs = engine.llm.generate(prompts, SamplingParams(max_tokens=1), use_tqdm=False)
    return {
        "prompt_tokens": sum(len(o.prompt_token_ids or ()) for o in outputs),
        "cached_tokens": sum(int(o.num_cached_tokens or 0) for o in outputs),
    }
