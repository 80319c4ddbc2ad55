"""reviewkit.plots: each helper returns a titled, labelled Figure (Agg backend, no engine)."""

import subprocess
import sys

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import reviewkit  # noqa: E402
from reviewkit import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _summary() -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "restaurant_id": [1, 1, 1, 2, 2, 3],
            "restaurant": ["A", "A", "A", "B", "B", "C"],
            "sentiment": pd.Categorical(
                ["positive", "negative", "positive", "negative", None, "positive"], categories=["positive", "negative"]
            ),
            "sentiment_score": [0.9, 0.1, 0.8, 0.2, float("nan"), 0.7],
        }
    )
    return reviewkit.summarize(df, by=["restaurant_id", "restaurant"])


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]


def test_plot_summary_bars_are_percent_per_group():
    fig = reviewkit.plot_summary(_summary())
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "Sentiment per restaurant"
    assert "%" in ax.get_ylabel()
    assert ax.get_xlabel() == "restaurant_id · restaurant"
    assert _texts(fig) == ["1 · A", "2 · B", "3 · C"]
    heights = [round(p.get_height(), 1) for p in ax.patches]
    # positive bars, then negative bars: A 2/3 vs 1/3, B (one labelled) 0 vs 100, C 100 vs 0
    assert heights == [66.7, 0.0, 100.0, 33.3, 100.0, 0.0]
    assert [t.get_text() for t in ax.texts] == ["n=3", "n=1", "n=1"]


def test_plot_summary_draws_on_given_axes_and_checks_input():
    fig, ax = plt.subplots()
    assert plots.plot_summary(_summary(), ax=ax, title="T") is fig
    assert ax.get_title() == "T"
    with pytest.raises(KeyError, match="positive_ratio"):
        plots.plot_summary(pd.DataFrame({"x": [1]}))


def test_plot_sweep_and_bars_have_titles_and_units():
    data = pd.DataFrame({"n": [64, 256, 1024], "rps": [40.0, 50.0, 55.0], "tps": [4000.0, 5000.0, 5500.0]})
    fig = plots.plot_sweep(
        data,
        "n",
        {"rps": "reviews/s"},
        title="Throughput",
        xlabel="Reviews",
        ylabel="Reviews per second (reviews/s)",
        logx=True,
    )
    ax = fig.axes[0]
    assert (ax.get_title(), ax.get_xlabel()) == ("Throughput", "Reviews")
    assert ax.get_xscale() == "log" and len(ax.lines) == 1
    assert [t.get_text() for t in ax.texts] == ["40", "50", "55"]
    fig = plots.plot_bars(["scoring", "generation"], [50.0, 2.5], title="Methods", ylabel="reviews/s")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "reviews/s" and [t.get_text() for t in ax.texts] == ["50.0", "2.5"]


def test_plot_cost_comparison_marks_break_even():
    volumes = [10, 100, 1000, 10000]
    fig = plots.plot_cost_comparison(
        volumes, {"pod": [1, 1.1, 2, 10], "serverless": [0.1, 1, 10, 100]}, break_even=110.0
    )
    ax = fig.axes[0]
    assert ax.get_title() and "US$" in ax.get_ylabel() and ax.get_xlabel()
    assert [line.get_label() for line in ax.get_lines()][:2] == ["pod", "serverless"]
    assert any("break-even" in t.get_text() for t in ax.texts)


def test_plot_watchdog_timeline_from_a_simulation(tmp_path):
    from reviewkit.watchdog.simulate import simulate

    trace = tmp_path / "t.csv"
    trace.write_text("seconds,gpu0\n" + "".join(f"{60 * i},{80 if i < 12 else 1}\n" for i in range(30)))
    result = simulate(trace, preset="aggressive")
    assert result.stop_time == 14 * 60
    fig = plots.plot_watchdog_timeline(result.records(), stop_time=result.stop_time, threshold=5.0, title="aggressive")
    ax = fig.axes[0]
    assert ax.get_title() == "aggressive"
    assert ax.get_xlabel() == "Time since the pod started (h)"
    assert ax.get_ylabel() == "GPU utilisation (%)"
    labels = ax.get_legend_handles_labels()[1]
    assert "stop at 0.23 h" in labels and "threshold 5 %" in labels
    assert "idle, billed" in labels and "after the stop (not billed)" in labels
    # The DataFrame form gives the same drawing.
    fig2 = plots.plot_watchdog_timeline(pd.DataFrame(result.records()), stop_time=result.stop_time)
    assert len(fig2.axes[0].lines) == len(ax.lines) - 1  # no threshold line


def test_spans_merge_adjacent_rows():
    assert plots._spans([0, 60, 120, 180, 240], [False, True, True, False, True]) == [(0, 120), (180, 240)]


def test_importing_reviewkit_plots_does_not_import_matplotlib():
    code = "import sys, reviewkit, reviewkit.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
