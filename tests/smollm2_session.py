"""The second packaged model's checks: one process, one engine at a time, JSON out.

Run by ``tests/test_smollm2.py`` (which asserts on the JSON) and by hand for the README's
figures: ``python tests/smollm2_session.py --part evaluation --sample 500 --korean 500
--no-environment`` (the evaluation half: the prompts were chosen on the other one). It loads
``smollm2`` by name, runs everything model-agnostic on it (analyze, the accessor,
summarize, SentimentAnalyzer, the CLI, calibration, the result cache, accuracy), then
unloads it and loads the same converted folder through ``LLM_MODEL``, as a user would
point ``LLM_MODEL`` at a local model on a pod, and scores the same reviews again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
LONG_TEXT = "The food was great. " * 2000  # beyond any max_model_len here
CONTRACT = {  # index -> text: unsorted, duplicated index, NaN, emoji, duplicate text, long text
    "h": "The pasta was wonderful and the staff were lovely, will be back!",
    "c": None,
    "a": "Cold food and a rude waiter.",
    "g": float("nan"),
    "b": "😋😋🔥",
    "f": LONG_TEXT,
    "e": "The pasta was wonderful and the staff were lovely, will be back!",
    "d": "   ",
}
SEED_REVIEWS = [
    {"id": 1, "restaurant_id": 3, "content": "Lovely dumplings, friendly owner. Highly recommended!"},
    {"id": 2, "restaurant_id": 3, "content": "Cold food and a rude waiter."},
    {"id": 3, "restaurant_id": 3, "content": ""},
]


def _fresh(reviewkit) -> None:
    """Make the next run compute every review: whether a review's KV blocks come from the
    prefix cache changes bf16 rounding (up to 0.02 in probability here), and runs are
    compared to 1e-6 below."""
    reviewkit.current_engine().llm.reset_prefix_cache()


def _labels(values) -> list:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]


def contract(reviewkit, pd) -> dict:
    df = pd.DataFrame(
        {"content": list(CONTRACT.values()), "restaurant_id": [1, 1, 2, 2, 1, 2, 1, 2]}, index=list(CONTRACT)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fresh(reviewkit)
        out = reviewkit.analyze(df, cache=False, progress=False)
    stats = reviewkit.last_run()
    _fresh(reviewkit)
    accessor = df.reviewkit.analyze(cache=False, progress=False)
    summary = accessor.reviewkit.summarize(by="restaurant_id")
    return {
        "index": list(out.index),
        "columns": list(out.columns),
        "restaurant_id": out["restaurant_id"].tolist(),
        "sentiments": _labels(out["sentiment"].astype(object)),
        "scores": out["sentiment_score"].tolist(),
        "categories": list(out["sentiment"].cat.categories),
        "accessor_scores": accessor["sentiment_score"].tolist(),
        "summary": json.loads(summary.reset_index().to_json(orient="records")),
        "warnings": [str(w.message) for w in caught if "truncated" in str(w.message)],
        "stats": {
            "rows": stats.rows,
            "empty_rows": stats.empty_rows,
            "unique_texts": stats.unique_texts,
            "computed": stats.computed,
            "truncated": stats.truncated,
            "model": stats.model,
        },
    }


def cli_run(reviewkit, pd, texts: list[str]) -> dict:
    from reviewkit import cli

    folder = Path(tempfile.mkdtemp(prefix="rk-smollm2-cli-"))
    pd.DataFrame({"content": texts}).to_csv(folder / "in.csv", index=False)
    _fresh(reviewkit)
    code = cli.main(
        ["analyze", str(folder / "in.csv"), "-o", str(folder / "out.csv"), "--model", "smollm2", "--no-cache", "-q"]
    )
    out = pd.read_csv(folder / "out.csv")
    return {"exit": code, "sentiments": out["sentiment"].tolist(), "scores": out["sentiment_score"].tolist()}


def accuracy(reviewkit, np, pd, name: str, n: int, part: str = "all", **options) -> dict:
    from reviewkit.evaluation import EVALUATION, SELECTION, Accuracy, split

    data = pd.read_csv(HERE / "data" / name)
    if part != "all":
        data = dict(zip((SELECTION, EVALUATION), split(data)))[part]
    data = data.head(n)
    _fresh(reviewkit)
    started = time.perf_counter()
    scored = reviewkit.score_texts(list(data["text"]), cache=False, progress=False, **options)
    seconds = time.perf_counter() - started
    hits = int((np.array(scored.sentiments(), dtype=object) == data["label"].to_numpy()).sum())
    low, high = Accuracy(hits, len(data)).interval
    return {
        "file": name,
        "part": part,
        "n": len(data),
        "hits": hits,
        "accuracy": hits / len(data),
        "ci95": [low, high],
        "positive_share": float((data["label"] == "positive").mean()),
        "seconds": seconds,
        "reviews_per_s": len(data) / seconds,
        "probs": scored.probs.tolist(),
    }


def by_name(reviewkit, np, pd, args) -> dict:
    from reviewkit import embedded, scoring
    from reviewkit.cache import ResultCache
    from reviewkit.prompts import default_templates

    started = time.perf_counter()
    engine = reviewkit.load("smollm2")
    tok = engine.tokenizer
    built = {lang: t.build(tok, engine.prefix_block_size) for lang, t in default_templates().items()}
    res: dict = {
        "engine": {
            "model_id": engine.model_id,
            "model_path": engine.model_path,
            "max_model_len": engine.max_model_len,
            "load_wall_seconds": time.perf_counter() - started,
            "expected_dir": str(embedded.model_dir("smollm2")),
            "embedded_model_id": f"embedded:{embedded.GEMMA.model_dir().name}",
            "bos_token_id": tok.bos_token_id,
            "first_token": tok("hi")["input_ids"][0],
            "has_chat_template": bool(getattr(tok, "chat_template", None)),
            "label_token_ids": built["en"].label_token_ids,
            "label_tokens": [tok.decode([i]) for i in built["en"].label_token_ids],
            "prefix_lengths": {k: len(b.prefix_ids) for k, b in built.items()},
            "prefix_block_size": engine.prefix_block_size,
        }
    }
    res["contract"] = contract(reviewkit, pd)
    res["seed"] = reviewkit.SentimentAnalyzer(cache=False).analyze(SEED_REVIEWS, restaurant_id=3)
    res["cli"] = cli_run(reviewkit, pd, [t for t in CONTRACT.values() if isinstance(t, str) and t.strip()][:3])

    en = accuracy(reviewkit, np, pd, "sentence_polarity_sample_en.csv", args.sample, args.part)
    raw = accuracy(reviewkit, np, pd, "sentence_polarity_sample_en.csv", args.sample, args.part, calibrate_scores=False)
    bias = scoring.content_free_bias(engine, built["en"])
    recalibrated = scoring.calibrate(np.array(raw["probs"]), bias)
    res["calibration"] = {
        "bias_en": bias.tolist(),
        "raw_accuracy": raw["accuracy"],
        "calibrated_accuracy": en["accuracy"],
        "max_diff_vs_manual": float(np.abs(recalibrated - np.array(en["probs"])).max()),
    }
    res["english"] = en
    res["korean"] = accuracy(reviewkit, np, pd, "nsmc_sample_ko.csv", args.korean, args.part) if args.korean else None

    cache = ResultCache(Path(tempfile.mkdtemp(prefix="rk-smollm2-cache-")) / "results.sqlite3")
    texts = list(dict.fromkeys(t for t in CONTRACT.values() if isinstance(t, str) and t.strip()))
    first = reviewkit.score_texts(texts, cache=cache, progress=False)
    again = reviewkit.score_texts(texts, cache=cache, progress=False)
    res["cache"] = {
        "path": str(cache.path),
        "texts": texts,
        "entries": len(cache),
        "first_computed": first.stats.computed,
        "again_cached": again.stats.cached,
        "again_computed": again.stats.computed,
        "identical": bool(np.array_equal(first.probs, again.probs)),
    }
    return res


def by_environment(reviewkit, np, pd, first: dict) -> dict:
    """The same folder through LLM_MODEL, as on a pod: scores must match loading by name."""
    from reviewkit.cache import ResultCache

    os.environ["LLM_MODEL"] = first["engine"]["model_path"]
    engine = reviewkit.load()
    res = {
        "model_id": engine.model_id,
        "model_path": engine.model_path,
        "max_model_len": engine.max_model_len,
        "contract": contract(reviewkit, pd),
    }
    en = accuracy(reviewkit, np, pd, "sentence_polarity_sample_en.csv", first["english"]["n"], first["english"]["part"])
    res["english"] = {k: v for k, v in en.items()}
    cache = ResultCache(first["cache"]["path"])  # filled under the by-name model id
    res["cache_cached_under_other_id"] = reviewkit.score_texts(
        first["cache"]["texts"], cache=cache, progress=False
    ).stats.cached
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=200, help="English reviews for accuracy (of 500)")
    parser.add_argument("--korean", type=int, default=100, help="Korean reviews for accuracy (0: skip)")
    parser.add_argument(
        "--part",
        choices=["all", "selection", "evaluation"],
        default="all",
        help="which half of the labelled data (reviewkit.evaluation.split); all: the first N",
    )
    parser.add_argument("--json", type=Path, help="write the results here (else stdout)")
    parser.add_argument("--no-environment", action="store_true", help="skip the LLM_MODEL reload")
    args = parser.parse_args(argv)
    os.environ.pop("LLM_MODEL", None)

    import numpy as np
    import pandas as pd

    import reviewkit

    started = time.perf_counter()
    results = {"by_name": by_name(reviewkit, np, pd, args)}
    reviewkit.unload()  # never two engines at once
    if not args.no_environment:
        results["by_environment"] = by_environment(reviewkit, np, pd, results["by_name"])
        reviewkit.unload()
    results["seconds"] = time.perf_counter() - started
    for key in ("english", "korean"):
        fig = results["by_name"][key]
        if fig:
            print(
                f"smollm2 {key}: accuracy {fig['accuracy']:.3f} (95% CI {fig['ci95'][0]:.3f}-{fig['ci95'][1]:.3f}) "
                f"on {fig['n']} reviews, {fig['reviews_per_s']:.1f} reviews/s",
                file=sys.stderr,
            )
    text = json.dumps(results, default=str)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
