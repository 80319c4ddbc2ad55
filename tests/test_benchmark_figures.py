"""The throughput benchmark's arithmetic (benchmarks/_bench_*.py), without an engine.

The benchmark itself takes minutes and is run by hand; these check that its ratios mean
what benchmarks/README.md says: the tcmalloc speed-up from neighbouring engines whatever
their order, llama.cpp's labels calibrated as reviewkit's, and that the report still
renders an older run's JSON.
"""

import json
import sys

import pytest
from rk_support import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import _bench_llamacpp  # noqa: E402
import _bench_report  # noqa: E402
import _bench_tcmalloc  # noqa: E402


def _engine(preload, *seconds, cpu=None):
    return {
        "tcmalloc": preload,
        "mapped": preload,
        "load_seconds": 1.0,
        "rounds": [{"seconds": s, "cpu_seconds": cpu} for s in seconds],
    }


def test_tcmalloc_speedup_is_the_median_of_neighbour_ratios_in_either_order():
    # off 100/s, on ~121/s, off 80/s (the machine got busier)
    engines = [_engine(False, 10.0, 10.0), _engine(True, 8.0, 8.5, cpu=16.0), _engine(False, 12.5, cpu=24.0)]
    engines[0]["rounds"][0]["cpu_seconds"] = engines[0]["rounds"][1]["cpu_seconds"] = 20.0
    fig = _bench_tcmalloc.figures(engines, 1000)
    assert fig["order"] == ["off", "on", "off"]
    on_rate = (1000 / 8.0 + 1000 / 8.5) / 2  # the median of its rounds' rates
    assert fig["reviews_per_s_per_engine"] == pytest.approx([100.0, on_rate, 80.0])
    assert fig["neighbour_ratios"] == pytest.approx([on_rate / 100, on_rate / 80])
    assert fig["speedup"] == pytest.approx(sum(fig["neighbour_ratios"]) / 2)
    assert fig["speedup_from_cpu_seconds"] == pytest.approx(20.0 / 16.0)
    # the same engines the other way round give the same ratios: on is always the numerator
    reversed_fig = _bench_tcmalloc.figures(engines[::-1], 1000)
    assert sorted(reversed_fig["neighbour_ratios"]) == pytest.approx(sorted(fig["neighbour_ratios"]))


def test_a_slower_preloaded_engine_gives_a_ratio_below_one():
    fig = _bench_tcmalloc.figures([_engine(False, 10.0), _engine(True, 12.0)], 600)
    assert fig["speedup"] == pytest.approx(10.0 / 12.0)


def test_llama_labels_are_calibrated_per_route_like_reviewkit():
    # Both reviews lean "positive" raw, but route "en"'s content-free inputs lean positive harder.
    result = {
        "label_logprobs": [[-0.5, -1.0], [-0.5, -1.0]],
        "content_free_logprobs": {"ko": [[-0.7, -0.7]], "en": [[-0.1, -2.5]]},
    }
    labels = _bench_llamacpp.labels_of(result, ["ko", "en"], ["positive", "negative"])
    assert labels == ["positive", "negative"]


def test_llama_ratio_uses_the_engine_next_to_each_round_and_leaves_out_prefix_time():
    rounds = [
        {
            "llama_cpp_version": "0.3",
            "threads": 2,
            "system_info": "",
            "load_seconds": 0.5,
            "prefix_reuse_max_abs_diff": 0.0,
            "label_logprobs": [[-0.1, -3.0], [-3.0, -0.1]],
            "content_free_logprobs": {"all": [[-0.7, -0.7]]},
            "rounds": [{"seconds": s + 1.0, "prefix_seconds": 1.0, "cpu_seconds": 2 * s}],
        }
        for s in (20.0, 25.0)
    ]
    fig = _bench_llamacpp.figures(
        rounds,
        [110.0, 90.0],
        400,
        ["all", "all"],
        ["positive", "negative"],
        ["positive", "positive"],
        ["positive", "negative"],
        100.0,
    )
    assert fig["ratio_per_round"] == pytest.approx([110.0 / 20.0, 90.0 / 16.0])
    assert fig["reviews_per_s"] == pytest.approx((20.0 + 16.0) / 2)
    assert fig["accuracy"] == 0.5 and fig["agreement_with_reviewkit"] == 1.0


def test_report_renders_a_run_from_before_the_tcmalloc_phase():
    run = json.loads((ROOT / "benchmarks" / "results" / "cpu-2026-11-29.json").read_text())
    table = _bench_report.markdown(run)
    assert "| reviewkit.analyze, cache off (N=1000" in table
    assert "tcmalloc" not in table and "llama" not in table
