"""reviewkit: restaurant-review sentiment on a vLLM engine loaded once per kernel.

The public API is thin and lazy: importing ``reviewkit`` imports neither vllm, torch
nor pandas, so the watchdog (``reviewkit.watchdog``) runs where only ``runpod`` and
``nvidia-ml-py`` are installed. Each name below is imported on first use.

    import reviewkit
    engine = reviewkit.load()                 # once per kernel; a re-run returns at once
    out = reviewkit.analyze(df, text="content")
    scored = reviewkit.score_texts(["맛있어요!", "cold food"])   # the same scoring on a list
    out = reviewkit.analyze(df, aspects=True)  # + aspect_taste ... aspect_wait: why, not just how
    reviewkit.summarize(out, by="restaurant_id")
    df.reviewkit.analyze()                    # the same, as a DataFrame accessor
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from reviewkit import _pandas_hook
from reviewkit._version import __version__

# public name -> module that defines it
_LAZY = {
    "load": "reviewkit.process_engine",
    "connect": "reviewkit.process_engine",
    "unload": "reviewkit.process_engine",
    "current_engine": "reviewkit.process_engine",
    "EngineSettingsMismatch": "reviewkit.process_engine",
    "Engine": "reviewkit.engines.base",
    "EngineDeadError": "reviewkit.engines.base",
    "LocalEngine": "reviewkit.engines.local",
    "EngineLoadError": "reviewkit.engines.local",
    "EngineSettings": "reviewkit.settings",
    "resolve_settings": "reviewkit.settings",
    "analyze": "reviewkit.analysis",
    "score_texts": "reviewkit.analysis",
    "score_aspects": "reviewkit.aspects",
    "ScoredAspects": "reviewkit.aspects",
    "Aspect": "reviewkit.aspect_prompts",
    "AspectError": "reviewkit.aspect_prompts",
    "ASPECTS": "reviewkit.aspect_prompts",
    "ScoredTexts": "reviewkit.scoring",
    "RunStats": "reviewkit.runstats",
    "last_run": "reviewkit.runstats",
    "summarize": "reviewkit.summary",
    "SentimentAnalyzer": "reviewkit.seed_api",
    "PromptTemplate": "reviewkit.prompts",
    "ResultCache": "reviewkit.cache",
    "cache_info": "reviewkit.cache",
    "cost": "reviewkit.cost",
    "prompts": "reviewkit.prompts",
    "scoring": "reviewkit.scoring",
    "evaluation": "reviewkit.evaluation",
    "activity": "reviewkit.activity",
    "sample_reviews": "reviewkit.samples",
    "varied_reviews": "reviewkit.samples",
    "aspect_reviews": "reviewkit.samples",
    "plot_summary": "reviewkit.plots",
    "plot_aspects": "reviewkit.plots",
    "ray": "reviewkit.ray",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from reviewkit import activity, cost, evaluation, prompts, ray, scoring
    from reviewkit.analysis import analyze, score_texts
    from reviewkit.aspect_prompts import ASPECTS, Aspect, AspectError
    from reviewkit.aspects import ScoredAspects, score_aspects
    from reviewkit.cache import ResultCache, cache_info
    from reviewkit.engines.base import Engine, EngineDeadError
    from reviewkit.engines.local import EngineLoadError, LocalEngine
    from reviewkit.plots import plot_aspects, plot_summary
    from reviewkit.process_engine import EngineSettingsMismatch, connect, current_engine, load, unload
    from reviewkit.prompts import PromptTemplate
    from reviewkit.runstats import RunStats, last_run
    from reviewkit.samples import aspect_reviews, sample_reviews, varied_reviews
    from reviewkit.scoring import ScoredTexts
    from reviewkit.seed_api import SentimentAnalyzer
    from reviewkit.settings import EngineSettings, resolve_settings
    from reviewkit.summary import summarize


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'reviewkit' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# ``df.reviewkit`` exists as soon as pandas is imported, before or after reviewkit,
# without reviewkit importing pandas itself.
_pandas_hook.register_when_pandas_loads("reviewkit.accessor")
