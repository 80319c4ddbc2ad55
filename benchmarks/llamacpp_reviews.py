"""The llama.cpp side of ``throughput.py --llama-cpp``: score reviews with llama-cpp-python.

Run by the benchmark in the Python that has ``llama_cpp`` (a separate virtualenv: it
compiles from source), with a spec the benchmark wrote: the GGUF file, reviewkit's own
prompt token ids grouped by prompt route, the label token ids. It needs only numpy and
llama_cpp, not reviewkit::

    python llamacpp_reviews.py SPEC.json OUT.json

It does what a careful llama-cpp-python user would: one ``Llama`` on all the cores this
process may use, each route's shared prompt prefix evaluated once and kept in the KV cache
(``n_tokens`` rolled back to it before each review, as ``Llama.generate`` does for a common
prefix), only the review's own tokens evaluated per review, and the label tokens'
log-probabilities read from the last position's logits (``logits_all=False``: logits for
every prompt position over the 262k vocabulary would cost more than the model).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    import llama_cpp
    import numpy as np

    spec = json.loads(open(argv[1], encoding="utf-8").read())
    threads = len(os.sched_getaffinity(0))
    started = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=spec["gguf"],
        n_ctx=spec["n_ctx"],
        n_batch=spec["n_ctx"],
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=False,
        verbose=False,
    )
    load_seconds = time.perf_counter() - started
    n_vocab = llm.n_vocab()
    labels = np.array(spec["label_token_ids"])

    def label_logprobs() -> list[float]:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        top = logits.max()
        log_z = top + np.log(np.exp(logits - top).sum())
        return (logits[labels] - log_z).tolist()

    def score_group(prefix: list[int], rests: list[list[int]]) -> tuple[list[list[float]], float]:
        """Evaluate ``prefix`` once, then each rest after it; returns the scores and the prefix's seconds."""
        t0 = time.perf_counter()
        llm.reset()
        llm.eval(prefix)
        prefix_seconds = time.perf_counter() - t0
        out = []
        for rest in rests:
            llm.n_tokens = len(prefix)  # eval() drops the KV cells after n_tokens
            llm.eval(rest)
            out.append(label_logprobs())
        return out, prefix_seconds

    result: dict[str, Any] = {
        "llama_cpp_version": llama_cpp.__version__,
        "threads": threads,
        "load_seconds": load_seconds,
        "n_ctx": spec["n_ctx"],
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "rounds": [],
    }
    n = sum(len(g["rests"]) for g in spec["groups"])
    scores: list[list[float] | None] = [None] * n
    for _ in range(spec.get("rounds", 1)):
        cpu0, t0, prefix_seconds = _cpu_seconds(), time.perf_counter(), 0.0
        for group in spec["groups"]:
            got, p_s = score_group(group["prefix"], group["rests"])
            prefix_seconds += p_s
            for index, value in zip(group["index"], got, strict=True):
                scores[index] = value
        seconds = time.perf_counter() - t0
        result["rounds"].append(
            {
                "seconds": seconds,
                "prefix_seconds": prefix_seconds,
                "cpu_seconds": _cpu_seconds() - cpu0,
                "reviews": n,
                "evaluated_tokens": sum(len(g["prefix"]) + sum(map(len, g["rests"])) for g in spec["groups"]),
            }
        )
    result["label_logprobs"] = scores
    # Content-free inputs (reviewkit's calibration), untimed.
    result["content_free_logprobs"] = {
        g["route"]: score_group(g["prefix"], g["content_free"])[0] for g in spec["groups"]
    }
    # Check that rolling back to the prefix gives what a fresh evaluation gives.
    first = spec["groups"][0]
    diffs = []
    for rest, reused in zip(first["rests"][:3], score_group(first["prefix"], first["rests"][:3])[0], strict=True):
        llm.reset()
        llm.eval(first["prefix"] + rest)
        diffs.append(float(np.abs(np.array(label_logprobs()) - np.array(reused)).max()))
    result["prefix_reuse_max_abs_diff"] = max(diffs) if diffs else None
    with open(argv[2], "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
