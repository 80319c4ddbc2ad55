"""reviewkit.cost: pod vs serverless arithmetic and watchdog savings (no engine)."""

import dataclasses
import math

import pytest

from reviewkit import cost
from reviewkit.cost import ServingFigures


def test_cost_per_1000_reviews_is_price_per_second_over_rate():
    # $3.60/h = $0.001/s; at 1 review/s a review costs $0.001, 1,000 cost $1.
    assert cost.cost_per_1000_reviews(3.6, 1.0) == pytest.approx(1.0)
    assert cost.cost_per_1000_reviews(3.6, 10.0) == pytest.approx(0.1)
    assert cost.cost_per_1000_reviews(0.0, 5.0) == 0.0


@pytest.mark.parametrize("price, rate", [(-1.0, 1.0), (1.0, 0.0), (1.0, -2.0), (1.0, math.inf), (1.0, math.nan)])
def test_cost_per_1000_reviews_refuses_bad_input(price, rate):
    with pytest.raises(ValueError):
        cost.cost_per_1000_reviews(price, rate)


def test_the_cost_notebook_states_the_default_figures():
    """Notebook 03's table of assumptions (``name=value``) is what the code computes with."""
    import json
    import re

    from rk_support import ROOT

    notebook = json.loads((ROOT / "notebooks" / "03_cost.ipynb").read_text(encoding="utf-8"))
    text = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    stated = {name: float(value) for name, value in re.findall(r"`(\w+)=([0-9.]+)`", text)}
    defaults = dataclasses.asdict(cost.DEFAULT_FIGURES)
    assert len(stated) >= 6 and set(stated) <= set(defaults)
    assert stated == pytest.approx({name: defaults[name] for name in stated})
    with pytest.raises(dataclasses.FrozenInstanceError):  # the shared defaults cannot be changed by accident
        cost.DEFAULT_FIGURES.pod_price_per_hour = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "field, value",
    [
        ("pod_price_per_hour", -0.1),
        ("pod_load_seconds", math.nan),
        ("serverless_price_per_second", math.inf),
        ("serverless_idle_timeout_seconds", -1.0),
        ("serverless_active_price_per_second", math.nan),
        ("reviews_per_request", 0),
        ("reviews_per_request", 2.5),
        ("network_overhead_seconds", -1),
    ],
)
def test_figures_refuse_impossible_values(field, value):
    with pytest.raises(ValueError, match=field):
        ServingFigures(**{field: value})


def test_pod_estimate_bills_load_processing_and_idle():
    f = ServingFigures(pod_price_per_hour=3.6, pod_load_seconds=100.0)
    est = cost.pod_estimate(1000, 10.0, f)
    assert est.option == "pod"
    assert est.wall_seconds == pytest.approx(200.0)  # 100 s load + 100 s work
    assert est.billed_seconds == pytest.approx(200.0)
    assert est.dollars == pytest.approx(0.2)
    assert est.dollars_per_1000_reviews == pytest.approx(0.2)
    idle = cost.pod_estimate(1000, 10.0, f, starts=2, idle_seconds=50.0)
    assert idle.wall_seconds == pytest.approx(300.0)  # idle time is billed, not waited for
    assert idle.billed_seconds == pytest.approx(350.0)
    assert idle.dollars == pytest.approx(0.35)
    assert cost.pod_estimate(1000, 10.0, f, starts=0).dollars == pytest.approx(cost.cost_per_1000_reviews(3.6, 10.0))
    with pytest.raises(ValueError):
        cost.pod_estimate(10, 1.0, f, starts=-1)
    with pytest.raises(ValueError):
        cost.pod_estimate(-1, 1.0, f)


def test_serverless_estimate_bills_a_cold_start_and_an_idle_tail_per_burst():
    f = ServingFigures(
        serverless_price_per_second=0.001,
        serverless_cold_start_seconds=60.0,
        serverless_idle_timeout_seconds=5.0,
        network_overhead_seconds=0.2,
        reviews_per_request=10,
    )
    est = cost.serverless_estimate(100, 10.0, f)
    # 10 s of work in one burst: one 60 s cold start and one 5 s idle tail.
    assert est.billed_seconds == pytest.approx(75.0)
    assert est.dollars == pytest.approx(0.075)
    assert est.wall_seconds == pytest.approx(72.0)  # + 10 x 0.2 s network; the tail is not waited for
    three = cost.serverless_estimate(100, 10.0, f, bursts=3)
    assert three.billed_seconds == pytest.approx(10.0 + 3 * 65.0)
    warm = cost.serverless_estimate(100, 10.0, f, cold=False)
    assert warm.billed_seconds == pytest.approx(15.0)
    assert cost.serverless_cost_per_1000_reviews(10.0, f) == pytest.approx(0.1)  # inside a warm burst
    assert cost.serverless_cost_per_request(10.0, f) == pytest.approx(0.006)  # 1 s + 5 s tail
    assert cost.serverless_cost_per_request(10.0, f, cold=True) == pytest.approx(0.066)
    with pytest.raises(ValueError, match="bursts"):
        cost.serverless_estimate(100, 10.0, f, bursts=0)


def test_a_long_batch_costs_about_the_flex_to_pod_price_ratio():
    # The old model charged 5 % of 10-review requests a 90 s cold start: 1,000,000 reviews
    # paid 5,000 cold starts and came out ~30x dearer than a pod. Per burst it is ~1x.
    f = cost.DEFAULT_FIGURES
    at = cost.compare(1_000_000, 59.0, f)
    ratio = at["serverless"].dollars / at["pod"].dollars
    assert ratio == pytest.approx(f.serverless_price_per_second / (f.pod_price_per_hour / 3600), rel=0.02)
    assert 0.9 < ratio < 1.1


def test_prices_and_active_workers_are_separate_figures():
    f = cost.DEFAULT_FIGURES
    assert f.serverless_active_price_per_second == cost.SERVERLESS_24GB_ACTIVE_PER_SECOND == 0.00013
    assert cost.SERVERLESS_A100_ACTIVE_PER_SECOND == 0.00060
    assert f.serverless_idle_timeout_seconds == cost.RUNPOD_DEFAULT_IDLE_TIMEOUT_SECONDS == 5.0
    assert cost.active_worker_price_per_hour(f) == pytest.approx(0.468)


def test_seed_request_price_is_in_the_seeds_range():
    # The seed: $0.001-0.01 per request. A lone warm 10-review request on a 24 GB flex worker
    # pays mostly its 5 s idle tail; a slow one on an A100 more.
    assert 0.001 <= cost.serverless_cost_per_request(20.0) <= 0.01
    a100 = ServingFigures(serverless_price_per_second=cost.SERVERLESS_A100_PER_SECOND, reviews_per_request=10)
    assert 0.001 <= cost.serverless_cost_per_request(1.0, a100) <= 0.02


def test_compare_and_break_even_agree():
    # A pod dearer per second than the flex worker but quicker to start: the pod wins small batches.
    f = ServingFigures(
        pod_price_per_hour=0.72,
        pod_load_seconds=60.0,
        serverless_price_per_second=0.00019,
        serverless_cold_start_seconds=90.0,
        serverless_idle_timeout_seconds=5.0,
    )
    rate = 20.0
    n = cost.break_even_reviews(rate, f)
    assert 0 < n < math.inf
    at = cost.compare(n, rate, f)
    assert set(at) == {"pod", "serverless"}
    assert at["pod"].dollars == pytest.approx(at["serverless"].dollars)
    below, above = cost.compare(n / 2, rate, f), cost.compare(n * 2, rate, f)
    assert below["pod"].dollars < below["serverless"].dollars
    assert above["serverless"].dollars < above["pod"].dollars
    slower = cost.compare(1000, rate, f, serverless_reviews_per_s=rate / 2)["serverless"]
    assert slower.billed_seconds == pytest.approx(95.0 + 100.0)


def test_break_even_edges():
    # Serverless cheaper per second and to start: it is cheaper at every size, they never cross.
    cheap = ServingFigures(
        pod_price_per_hour=3.6, serverless_price_per_second=0.0001, serverless_cold_start_seconds=10.0
    )
    assert cost.break_even_reviews(10.0, cheap) == math.inf
    assert cost.compare(10**6, 10.0, cheap)["serverless"].dollars < cost.compare(10**6, 10.0, cheap)["pod"].dollars
    # A cheaper pod that starts for free is never dearer: no crossing either.
    free_load = ServingFigures(pod_price_per_hour=0.36, pod_load_seconds=0.0)
    assert cost.break_even_reviews(10.0, free_load) == math.inf
    # Equal starts: the same cost at size 0.
    same = ServingFigures(
        pod_price_per_hour=0.36,
        pod_load_seconds=95.0,
        serverless_price_per_second=0.0001,
        serverless_cold_start_seconds=90.0,
        serverless_idle_timeout_seconds=5.0,
    )
    assert cost.break_even_reviews(10.0, same) == 0.0


def test_break_even_per_hour_is_pod_price_over_serverless_price_per_review():
    f = ServingFigures(pod_price_per_hour=3.6, serverless_price_per_second=0.001)
    # Serverless: 0.1 s per review = $0.0001; $3.60/h buys 36,000 such reviews (no bursts).
    assert cost.break_even_reviews_per_hour(10.0, f, bursts_per_hour=0) == pytest.approx(36_000)
    # One cold burst an hour costs 95 s = $0.095 of it.
    assert cost.break_even_reviews_per_hour(10.0, f) == pytest.approx((3.6 - 0.095) / 0.0001)
    zero = ServingFigures(serverless_price_per_second=0.0)
    assert cost.break_even_reviews_per_hour(10.0, zero) == math.inf


def test_watchdog_savings_in_hours_and_dollars():
    s = cost.watchdog_savings(billed_idle_seconds=1800, unwatched_idle_seconds=9000, price_per_hour=0.5)
    assert s.billed_idle_hours == pytest.approx(0.5)
    assert s.saved_idle_hours == pytest.approx(2.0)
    assert s.billed_dollars == pytest.approx(0.25)
    assert s.saved_dollars == pytest.approx(1.0)
    with pytest.raises(ValueError, match="exceeds"):
        cost.watchdog_savings(10, 5)
    with pytest.raises(ValueError):
        cost.watchdog_savings(0, 5, price_per_hour=-1)


def test_savings_from_a_real_simulation(tmp_path):
    from reviewkit.watchdog.simulate import simulate

    trace = tmp_path / "trace.csv"
    rows = ["seconds,gpu0"] + [f"{60 * i},{90 if i < 10 else 0}" for i in range(60)]
    trace.write_text("\n".join(rows) + "\n")
    result = simulate(trace, preset="default")
    s = cost.savings_from_simulation(result, price_per_hour=3.6)
    assert s.billed_idle_seconds == result.idle_seconds_billed == 5 * 60
    assert s.unwatched_idle_seconds == result.idle_seconds_unwatched == 50 * 60
    assert s.saved_dollars == pytest.approx(45 * 60 / 3600 * 3.6)
