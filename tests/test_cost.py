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


def test_defaults_are_the_seed_figures():
    f = cost.DEFAULT_FIGURES
    assert 0.5 <= f.pod_price_per_hour <= 1.0
    assert 60 <= f.pod_load_seconds <= 120
    assert 0.1 <= f.network_overhead_seconds <= 0.2
    assert f.serverless_price_per_second == cost.SERVERLESS_24GB_PER_SECOND == 0.00019
    assert cost.SERVERLESS_A100_PER_SECOND == 0.00076
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.pod_price_per_hour = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("field, value", [
    ("pod_price_per_hour", -0.1), ("pod_load_seconds", math.nan), ("serverless_price_per_second", math.inf),
    ("cold_start_share", 1.5), ("cold_start_share", -0.1), ("reviews_per_request", 0),
    ("reviews_per_request", 2.5), ("network_overhead_seconds", -1),
])
def test_figures_refuse_impossible_values(field, value):
    with pytest.raises(ValueError, match=field):
        ServingFigures(**{field: value})


def test_pod_estimate_bills_load_processing_and_idle():
    f = ServingFigures(pod_price_per_hour=3.6, pod_load_seconds=100.0)
    est = cost.pod_estimate(1000, 10.0, f)
    assert est.option == "pod"
    assert est.wall_seconds == pytest.approx(200.0)       # 100 s load + 100 s work
    assert est.billed_seconds == pytest.approx(200.0)
    assert est.dollars == pytest.approx(0.2)
    assert est.dollars_per_1000_reviews == pytest.approx(0.2)
    idle = cost.pod_estimate(1000, 10.0, f, starts=2, idle_seconds=50.0)
    assert idle.wall_seconds == pytest.approx(300.0)      # idle time is billed, not waited for
    assert idle.billed_seconds == pytest.approx(350.0)
    assert idle.dollars == pytest.approx(0.35)
    assert cost.pod_estimate(1000, 10.0, f, starts=0).dollars == pytest.approx(
        cost.cost_per_1000_reviews(3.6, 10.0))
    with pytest.raises(ValueError):
        cost.pod_estimate(10, 1.0, f, starts=-1)
    with pytest.raises(ValueError):
        cost.pod_estimate(-1, 1.0, f)


def test_serverless_estimate_averages_cold_starts_and_adds_network_latency():
    f = ServingFigures(serverless_price_per_second=0.001, serverless_cold_start_seconds=60.0,
                       cold_start_share=0.5, network_overhead_seconds=0.2, reviews_per_request=10)
    est = cost.serverless_estimate(100, 10.0, f)
    # 10 s of work, 10 requests of which half are cold: 5 x 60 s.
    assert est.billed_seconds == pytest.approx(310.0)
    assert est.dollars == pytest.approx(0.31)
    assert est.wall_seconds == pytest.approx(312.0)        # + 10 x 0.2 s network, not billed
    assert cost.serverless_cost_per_1000_reviews(10.0, f) == pytest.approx(3.1)
    assert cost.serverless_cost_per_request(10.0, f) == pytest.approx(0.031)
    warm = dataclasses.replace(f, cold_start_share=0.0)
    assert cost.serverless_estimate(100, 10.0, warm).dollars == pytest.approx(0.01)


def test_seed_request_price_is_in_the_seeds_range_for_a_slow_request():
    # The seed: $0.001-0.01 per request; a 10 s request on an A100 worker costs $0.0076.
    f = ServingFigures(serverless_price_per_second=cost.SERVERLESS_A100_PER_SECOND,
                       cold_start_share=0.0, reviews_per_request=10)
    assert 0.001 <= cost.serverless_cost_per_request(1.0, f) <= 0.01


def test_compare_and_break_even_agree():
    f = ServingFigures(pod_price_per_hour=0.72, pod_load_seconds=90.0, serverless_price_per_second=0.00019,
                       cold_start_share=0.05, serverless_cold_start_seconds=90.0, reviews_per_request=10)
    rate = 20.0
    n = cost.break_even_reviews(rate, f)
    assert 0 < n < math.inf
    at = cost.compare(n, rate, f)
    assert set(at) == {"pod", "serverless"}
    assert at["pod"].dollars == pytest.approx(at["serverless"].dollars)
    below, above = cost.compare(n / 2, rate, f), cost.compare(n * 2, rate, f)
    assert below["serverless"].dollars < below["pod"].dollars
    assert above["pod"].dollars < above["serverless"].dollars


def test_break_even_edges():
    # Serverless cheaper per engine second and no cold starts: the pod never pays off.
    cheap = ServingFigures(pod_price_per_hour=3.6, serverless_price_per_second=0.0001, cold_start_share=0.0)
    assert cost.break_even_reviews(10.0, cheap) == math.inf
    # A pod with no load time and a lower price is never dearer.
    free_load = ServingFigures(pod_price_per_hour=0.36, pod_load_seconds=0.0)
    assert cost.break_even_reviews(10.0, free_load) == 0.0


def test_break_even_per_hour_is_pod_price_over_serverless_price_per_review():
    f = ServingFigures(pod_price_per_hour=3.6, serverless_price_per_second=0.001, cold_start_share=0.0)
    # Serverless: 0.1 s per review = $0.0001; $3.60/h buys 36,000 such reviews.
    assert cost.break_even_reviews_per_hour(10.0, f) == pytest.approx(36_000)
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
