"""float32 against bfloat16 on this CPU: reviews/s of the same reviews, one engine at a time.

Why it exists: reviewkit's CPU default dtype is bfloat16 only where the CPU computes it
natively (AVX-512 BF16, AMX), float32 elsewhere (``reviewkit.engines.local.cpu_dtype``). This
prints both rates and the CPU's capability so that choice can be checked on any machine.

    python benchmarks/cpu_dtype.py --json benchmarks/results/cpu-dtype-$(date +%F).json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path


def rate(dtype: str, texts: list[str]) -> dict:
    import reviewkit

    started = time.perf_counter()
    reviewkit.load("embedded", dtype=dtype)
    load_seconds = time.perf_counter() - started
    try:
        reviewkit.score_texts(texts[:32], cache=False, progress=False)  # warm the prefix cache
        run = reviewkit.score_texts(texts[32:], cache=False, progress=False).stats
    finally:
        reviewkit.unload()
    return {
        "dtype": dtype,
        "reviews": run.computed,
        "seconds": run.engine_seconds,
        "reviews_per_s": run.engine_reviews_per_s,
        "load_seconds": load_seconds,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=232, help="distinct reviews per engine, 32 of them a warm-up")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    import reviewkit
    from reviewkit.engines.local import cpu_dtype

    texts = list(reviewkit.varied_reviews(args.n, seed=11)["content"])
    results = [rate(dtype, texts) for dtype in ("float32", "bfloat16")]
    by = {r["dtype"]: r for r in results}
    report = {
        "date": _dt.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "reviewkit_default": cpu_dtype(),
        "results": results,
        "float32_over_bfloat16": by["float32"]["reviews_per_s"] / by["bfloat16"]["reviews_per_s"],
    }
    print("| dtype | reviews/s | load s |\n| --- | ---: | ---: |")
    for r in results:
        print(f"| {r['dtype']} | {r['reviews_per_s']:.1f} | {r['load_seconds']:.0f} |")
    print(
        f"CPU capability {report['cpu_capability']}; float32 / bfloat16 = {report['float32_over_bfloat16']:.2f}; "
        f"reviewkit's default here: {report['reviewkit_default']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
