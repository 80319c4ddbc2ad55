"""Matplotlib figures for the notebooks: summaries, sweeps, costs, watchdog timelines.

Every function returns the ``matplotlib.figure.Figure`` (drawn on ``ax`` when one is
given) with a title, axis labels and units. matplotlib is imported inside the
functions, so ``import reviewkit`` stays cheap and the watchdog never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POSITIVE_COLOR = "#2a9d8f"
NEGATIVE_COLOR = "#e76f51"


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _label(key: Any) -> str:
    return " · ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def plot_summary(summary: pd.DataFrame, *, ax: Axes | None = None, title: str = "Sentiment per restaurant") -> Figure:
    """Side-by-side bars of ``positive_ratio`` and ``negative_ratio`` (percent) per group.

    ``summary`` is a :func:`reviewkit.summarize` result; each bar pair is labelled with
    its group key (several keys are joined) and the number of labelled reviews.
    """
    missing = [c for c in ("positive_ratio", "negative_ratio", "labelled") if c not in summary.columns]
    if missing:
        raise KeyError(f"summary lacks columns {missing}: pass a reviewkit.summarize() result")
    ax = _axes(ax, (max(6.0, 1.3 * len(summary) + 2.0), 4.0))
    x = list(range(len(summary)))
    width = 0.4
    positive = (summary["positive_ratio"].fillna(0) * 100).tolist()
    negative = (summary["negative_ratio"].fillna(0) * 100).tolist()
    ax.bar([i - width / 2 for i in x], positive, width, label="positive", color=POSITIVE_COLOR)
    ax.bar([i + width / 2 for i in x], negative, width, label="negative", color=NEGATIVE_COLOR)
    for i, n, top in zip(x, summary["labelled"], map(max, positive, negative)):
        ax.annotate(f"n={n}", (i, top), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(x, [_label(k) for k in summary.index], rotation=20, ha="right")
    ax.set_ylim(0, 120)
    ax.set_ylabel("Share of labelled reviews (%)")
    names = [n for n in summary.index.names if n]
    ax.set_xlabel(" · ".join(names) if names else "group")
    ax.set_title(title)
    ax.legend(loc="upper right", ncols=2, fontsize=8)
    return ax.figure


def plot_sweep(
    data: pd.DataFrame,
    x: str,
    ys: Sequence[str] | Mapping[str, str],
    *,
    ax: Axes | None = None,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    annotate: bool = True,
) -> Figure:
    """One line (with markers) per column of ``ys`` against ``x``; ``ys`` may map
    column -> legend label. Points are annotated with their value when ``annotate``."""
    ax = _axes(ax, (6.5, 4.0))
    labels = dict(ys) if isinstance(ys, Mapping) else {y: y for y in ys}
    for column, label in labels.items():
        ax.plot(data[x], data[column], marker="o", label=label)
        if annotate:
            for xv, yv in zip(data[x], data[column]):
                ax.annotate(
                    f"{yv:,.0f}" if abs(yv) >= 10 else f"{yv:.2g}",
                    (xv, yv),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=8,
                )
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(data[x]), [str(v) for v in data[x]])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if len(labels) > 1:
        ax.legend()
    return ax.figure


def plot_bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    ax: Axes | None = None,
    title: str,
    ylabel: str,
    xlabel: str = "",
    fmt: str = "{:,.1f}",
    colors: Sequence[str] | None = None,
) -> Figure:
    """Labelled bars with their values written on top (e.g. two methods compared)."""
    import textwrap

    ax = _axes(ax, (max(6.5, 1.8 * len(labels) + 1.5), 4.0))
    bars = ax.bar([textwrap.fill(str(label), 20) for label in labels], list(values), color=colors)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2)
    ax.set_ylim(0, max(list(values) + [0.0]) * 1.15 or 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax.figure


def plot_cost_comparison(
    volumes: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    break_even: float | None = None,
    ax: Axes | None = None,
    title: str = "Pod vs serverless: cost of one batch",
    xlabel: str = "Reviews in the batch",
    ylabel: str = "Cost (US$)",
) -> Figure:
    """Cost curves against volume on log-log axes, with the break-even volume marked."""
    ax = _axes(ax, (6.5, 4.0))
    for name, dollars in curves.items():
        ax.plot(list(volumes), list(dollars), label=name)
    if break_even is not None and 0 < break_even < float("inf"):
        ax.axvline(break_even, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            f"break-even ≈ {break_even:,.0f} reviews",
            (break_even, 0.5),
            xycoords=("data", "axes fraction"),
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return ax.figure


def _column(records: Any, name: str) -> list[Any]:
    if hasattr(records, "columns"):  # a DataFrame
        return list(records[name])
    return [r[name] for r in records]


def _spans(times: Sequence[float], flags: Iterable[bool]) -> list[tuple[float, float]]:
    """Merged (start, end) intervals of the rows flagged True (a row covers the time
    since the previous row, as the watchdog's billing does)."""
    spans: list[tuple[float, float]] = []
    for previous, now, flag in zip(times, times[1:], list(flags)[1:]):
        if not flag:
            continue
        if spans and spans[-1][1] == previous:
            spans[-1] = (spans[-1][0], now)
        else:
            spans.append((previous, now))
    return spans


def plot_watchdog_timeline(
    records: Any,
    *,
    stop_time: float | None = None,
    threshold: float | None = None,
    ax: Axes | None = None,
    title: str = "GPU utilisation and the watchdog's stop",
) -> Figure:
    """Utilisation (%) over time (hours) from ``SimulationResult.records()`` (or a
    DataFrame of it): idle time billed shaded orange, idle time saved after the stop
    shaded grey, the threshold dashed and the stop moment as a red line."""
    ax = _axes(ax, (9.0, 3.2))
    times = [float(t) for t in _column(records, "time")]
    util = [float("nan") if u is None else float(u) for u in _column(records, "utilization")]
    verdicts = _column(records, "verdict")
    hours = [t / 3600.0 for t in times]
    ax.plot(hours, util, color="#264653", linewidth=1, label="GPU utilisation")
    stop = float("inf") if stop_time is None else stop_time
    idle = [v == "idle" for v in verdicts]
    for i, (start, end) in enumerate(_spans(times, [f and t <= stop for f, t in zip(idle, times)])):
        ax.axvspan(
            start / 3600, end / 3600, color="#f4a261", alpha=0.35, lw=0, label="idle, billed" if i == 0 else None
        )
    if stop_time is not None:
        after = [t > stop for t in times]
        for i, (start, end) in enumerate(_spans(times, after)):
            ax.axvspan(
                start / 3600,
                end / 3600,
                color="grey",
                alpha=0.2,
                lw=0,
                label="after the stop (not billed)" if i == 0 else None,
            )
        ax.axvline(stop_time / 3600, color="#d62828", linewidth=2, label=f"stop at {stop_time / 3600:.2f} h")
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g} %")
    ax.set_xlim(hours[0] if hours else 0, hours[-1] if hours else 1)
    ax.set_ylim(0, 105)
    ax.set_xlabel("Time since the pod started (h)")
    ax.set_ylabel("GPU utilisation (%)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return ax.figure


def korean_font() -> str | None:
    """An installed font family with Hangul (Noto Sans CJK, Nanum, Malgun...), or None.

    matplotlib's default DejaVu Sans has no Hangul, so Korean names would draw as boxes.
    """
    from matplotlib import font_manager

    wanted = (
        "Noto Sans CJK KR",
        "Noto Sans CJK JP",
        "Noto Sans KR",
        "NanumGothic",
        "Malgun Gothic",
        "AppleGothic",
        "Noto Sans CJK SC",
        "Droid Sans Fallback",
    )
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in wanted if name in installed), None)


def plot_aspects(
    summary: pd.DataFrame, *, ax: Axes | None = None, title: str = "Aspects per restaurant: positive share of mentions"
) -> Figure:
    """A heatmap of groups × aspects: colour is the positive share of an aspect's mentions
    (red 0 % to green 100 %; grey where none), each cell is written with its share and the
    number of mentions (``n``).

    ``summary`` is a :func:`reviewkit.summarize` result of an ``analyze(aspects=...)`` frame.
    Korean group names are drawn with an installed Hangul font (:func:`korean_font`).
    """
    import numpy as np

    names = [c[: -len("_positive_share")] for c in summary.columns if str(c).endswith("_positive_share")]
    if not names:
        raise KeyError("summary has no aspect columns: pass reviewkit.summarize() of analyze(..., aspects=True)")
    shares = summary[[f"{n}_positive_share" for n in names]].to_numpy(dtype=float)
    mentions = summary[[f"{n}_mentions" for n in names]].to_numpy(dtype=int)
    ax = _axes(ax, (1.3 * len(names) + 3.0, 0.55 * len(summary) + 1.8))
    cmap = _share_colormap()
    image = ax.imshow(np.ma.masked_invalid(shares), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    font = korean_font()
    for i in range(shares.shape[0]):
        for j in range(shares.shape[1]):
            share = shares[i, j]
            text = "–" if np.isnan(share) else f"{share:.0%}"
            ax.text(j, i, f"{text}\nn={mentions[i, j]}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(summary)), [_label(k) for k in summary.index], **({"fontfamily": font} if font else {}))
    keys = [n for n in summary.index.names if n]
    ax.set_ylabel(" · ".join(keys) if keys else "group")
    ax.set_xlabel("aspect")
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, label="positive share of mentions", format=lambda v, _: f"{v:.0%}")
    return ax.figure


def _share_colormap() -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("share", [NEGATIVE_COLOR, "#f4f1de", POSITIVE_COLOR])
    return cmap.with_extremes(bad="#d9d9d9")
