"""The throughput benchmark on a GPU pod with a 7B model, next to what the GPU should do.

    python benchmarks/pod_benchmark.py                 # Qwen/Qwen2.5-7B-Instruct (or $LLM_MODEL)
    python benchmarks/pod_benchmark.py --quick         # any benchmarks/throughput.py option passes through
    python benchmarks/pod_benchmark.py --expect-only benchmarks/results/cpu-2026-11-29.json --gpu h100-sxm

It runs ``benchmarks/throughput.py`` unchanged (same phases, same ratios) with the pod
model, writes ``benchmarks/results/gpu-<gpu>-<date>.json``, then prints the figures the
GPU's compute and memory bandwidth predict for the token counts the run measured (see
benchmarks/README.md for the model): a classification is one prefill of the review's
tokens, so reviewkit is compute-bound; the seed's way adds a decode of ~20 tokens per
review, one weight read per step for the whole batch.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POD_MODEL = "Qwen/Qwen2.5-7B-Instruct"
POD_SEED_N = 1000  # reviews per round of the seed's way on the pod

# Dense bf16 tensor TFLOP/s (no sparsity, FP32 accumulate) and memory bandwidth (TB/s),
# from the vendors' data sheets; "match" finds them in nvidia-smi's name (regular expressions).
GPUS: dict[str, dict[str, Any]] = {
    "h200": {"name": "H200 SXM", "tflops": 989, "tb_s": 4.8, "match": ("h200",)},
    "h100-sxm": {"name": "H100 SXM", "tflops": 989, "tb_s": 3.35, "match": (r"h100.*(hbm3|sxm)",)},
    "h100-pcie": {"name": "H100 PCIe", "tflops": 756, "tb_s": 2.0, "match": (r"h100.*pcie",)},
    "a100": {"name": "A100 80GB SXM", "tflops": 312, "tb_s": 2.0, "match": ("a100",)},
    "l40s": {"name": "L40S", "tflops": 362, "tb_s": 0.864, "match": ("l40s",)},
    "rtx-4090": {"name": "RTX 4090", "tflops": 165, "tb_s": 1.008, "match": ("4090",)},
    "rtx-a6000": {"name": "RTX A6000", "tflops": 155, "tb_s": 0.768, "match": ("rtx a6000",)},
    "l4": {"name": "L4", "tflops": 121, "tb_s": 0.3, "match": (r"\bl4\b",)},
}
PARAMS = 7.6e9  # Qwen2.5-7B: 7.6e9 parameters, 6.5e9 outside the embeddings
FLOPS_PER_TOKEN = 2 * 7e9  # ~2 x parameters per token (the 2 x 7e9)
WEIGHT_BYTES = 2 * PARAMS  # bf16 weights, read once per decode step
MFU = (0.4, 0.6)  # fraction of peak a large vLLM prefill batch reaches
DECODE_MFU_SHARE = 0.5  # decode steps (B rows per GEMM, KV reads, one step per token) reach about half


def gpu_key(name: str) -> str | None:
    lowered = name.lower()
    for key, spec in GPUS.items():
        if any(re.search(m, lowered) for m in spec["match"]):
            return key
    return None


def detected_gpu() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=True
        ).stdout
        return out.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return ""


def default_concurrency(gpu: str) -> int:
    """vLLM's default max_num_seqs for the offline LLM class (16384 tokens / 1024 sequences
    on GPUs with >= 70 GiB other than the A100, else 8192 / 256)."""
    return 1024 if gpu in ("h200", "h100-sxm", "h100-pcie") else 256


def expected(gpu: str, results: dict[str, Any], mfu: float) -> dict[str, float]:
    """Reviews/s the GPU's compute and bandwidth allow for the measured token counts."""
    spec = GPUS[gpu]
    peak = spec["tflops"] * 1e12 * mfu
    rk_tokens = results["computed_tokens_per_review"]
    seed = results["seed_style"]
    if results.get("device") == "cuda":  # a pod run: its own engine settings and batch
        concurrency = min(results["engine_config"]["max_num_seqs"], results["seed_n"])
    else:  # a CPU run's token counts, with what this script runs on the pod
        concurrency = min(default_concurrency(gpu), POD_SEED_N)
    # reviewkit: one prefill of the review's own tokens (the prefix is cached): compute-bound.
    rk = peak / (FLOPS_PER_TOKEN * rk_tokens)
    # The seed's way: prefill of its uncached prompt tokens, then `generated` decode steps;
    # a step reads every weight once for the whole batch and computes one token per sequence.
    step = max(WEIGHT_BYTES / (spec["tb_s"] * 1e12), concurrency * FLOPS_PER_TOKEN / (DECODE_MFU_SHARE * peak))
    per_review = (
        FLOPS_PER_TOKEN * seed["computed_prompt_tokens_per_review"] / peak
        + seed["generated_tokens_per_review"] * step / concurrency
    )
    no_prefix = peak / (FLOPS_PER_TOKEN * results["prompt_tokens_per_review"])
    return {
        "reviewkit_reviews_per_s": rk,
        "seed_style_reviews_per_s": 1 / per_review,
        "no_prefix_cache_reviews_per_s": no_prefix,
        "reviewkit_vs_seed_style": rk * per_review,
        "decode_step_ms": 1000 * step,
        "seed_concurrency": concurrency,
        "decode_bound": "memory"
        if WEIGHT_BYTES / (spec["tb_s"] * 1e12) >= concurrency * FLOPS_PER_TOKEN / (DECODE_MFU_SHARE * peak)
        else "compute",
    }


def expectation_table(gpu: str, results: dict[str, Any]) -> str:
    low, high = (expected(gpu, results, m) for m in MFU)
    spec = GPUS[gpu]
    seed = results["seed_style"]
    lines = [
        f"Expected on {spec['name']} ({spec['tflops']} bf16 TFLOP/s dense, {spec['tb_s']} TB/s), "
        f"7B model at {FLOPS_PER_TOKEN / 1e9:.0f} GFLOP/token, MFU {MFU[0]:.0%}-{MFU[1]:.0%}; token counts "
        f"from `{results['model']}`: reviewkit {results['computed_tokens_per_review']:.1f} computed tokens/review "
        f"({results['prompt_tokens_per_review']:.0f} with the cached prefix); seed's way "
        f"{seed['computed_prompt_tokens_per_review']:.1f} computed prompt + {seed['generated_tokens_per_review']:.1f} "
        f"generated tokens/review, {low['seed_concurrency']} sequences per decode step "
        f"({low['decode_step_ms']:.1f}-{high['decode_step_ms']:.1f} ms, {low['decode_bound']}-bound).",
        "",
        "| measure | expected | measured |",
        "| --- | ---: | ---: |",
    ]
    for key, unit in (
        ("reviewkit_reviews_per_s", "reviews/s"),
        ("seed_style_reviews_per_s", "reviews/s"),
        ("no_prefix_cache_reviews_per_s", "reviews/s"),
        ("reviewkit_vs_seed_style", "×"),
    ):
        measured = results.get(key, results.get("ratios", {}).get(key))
        if results.get("device") != "cuda":  # a CPU run supplies only the token counts
            measured = None
        shown = "n/a" if measured is None else f"{measured:,.1f} {unit}"
        digits = 1 if unit == "×" else 0
        lo, hi = f"{low[key]:,.{digits}f}", f"{high[key]:,.{digits}f}"
        lines.append(f"| {key} | {lo if lo == hi else lo + '-' + hi} {unit} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--gpu", choices=sorted(GPUS), help="GPU for the expectation (default: detected)")
    parser.add_argument(
        "--expect-only",
        type=Path,
        metavar="JSON",
        help="print the expectation for an existing result file; run nothing",
    )
    parser.add_argument("-h", "--help", action="store_true")
    args, passthrough = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        print("\nAll other options go to benchmarks/throughput.py:")
        subprocess.run([sys.executable, str(HERE / "throughput.py"), "--help"])
        return 0
    name = detected_gpu()
    gpu = args.gpu or gpu_key(name)

    if args.expect_only:
        results = json.loads(args.expect_only.read_text())
    else:
        os.environ.setdefault("LLM_MODEL", POD_MODEL)
        slug = gpu or (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu")
        out = HERE / "results" / f"gpu-{slug}-{_dt.date.today().isoformat()}.json"
        # A GPU does 1,000 reviews in about a second: more rounds, and more reviews for
        # the slow paths, than on a CPU.
        defaults = ["--rounds", "3", "--seed-n", str(POD_SEED_N), "--no-prefix-n", "1000"]
        cmd = [sys.executable, str(HERE / "throughput.py"), "--json", str(out), *defaults, *passthrough]
        print("running:", " ".join(cmd), f"(LLM_MODEL={os.environ['LLM_MODEL']})", file=sys.stderr, flush=True)
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            return rc
        results = json.loads(out.read_text())
    if gpu is None:
        print(f"\nno expectation: GPU {name!r} is not in the table; pass --gpu one of {sorted(GPUS)}")
        return 0
    table = expectation_table(gpu, results)
    print("\n" + table)
    if not args.expect_only:
        results["expected"] = {"gpu": gpu, **{f"mfu_{m}": expected(gpu, results, m) for m in MFU}}
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
