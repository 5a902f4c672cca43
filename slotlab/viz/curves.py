"""Training curves: one panel per loss term of a run's log, drawn with matplotlib.

Figures are built on matplotlib's object API (no pyplot), so nothing here touches a
global backend or opens a window.
"""

from __future__ import annotations

import io
import math

from matplotlib.figure import Figure

from slotlab.train.tracking import SECONDS

#: Log fields that are not loss terms.
NOT_LOSSES = ("step", "stage", "lr", SECONDS)
PANEL_INCHES = (3.0, 2.2)
MAX_COLUMNS = 4  # four panels are about 1200 px wide at DPI
DPI = 100


def loss_terms(records: list[dict]) -> list[str]:
    """The logged loss terms, total ``loss`` first, then in the order the log first names them."""
    terms: list[str] = []
    for record in records:
        for key, value in record.items():
            if key not in NOT_LOSSES and key not in terms and isinstance(value, (int, float)):
                terms.append(key)
    return sorted(terms, key=lambda t: t != "loss")


def stage_starts(records: list[dict]) -> list[tuple[int, str]]:
    """(first logged step, name) of every stage: where the curves may change regime."""
    starts, previous = [], object()
    for record in records:
        if "stage" not in record:  # e.g. an evaluation's record
            continue
        stage = record["stage"]
        if stage != previous:
            starts.append((record["step"], str(stage)))
        previous = stage
    return starts


def _spans_decades(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(positive) and max(positive) / min(positive) > 30


def curves_png(records: list[dict], title: str) -> bytes:
    """A PNG with one panel per loss term (value against step; log scale where the term is
    positive and spans more than a decade and a half), each stage named where it starts and
    stage changes marked by dotted lines."""
    terms = loss_terms(records)
    if not terms:
        raise ValueError(f"{title}: the log holds no loss values to plot")
    columns = min(MAX_COLUMNS, len(terms))
    rows = math.ceil(len(terms) / columns)
    figure = Figure(figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows + 0.3), dpi=DPI, layout="constrained")
    figure.suptitle(title, fontsize=11)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    starts = stage_starts(records)
    marked = starts if len(starts) > 1 else []  # one stage: nothing to mark
    for ax, term in zip(axes, terms):
        points = [(r["step"], r[term]) for r in records if isinstance(r.get(term), (int, float)) and math.isfinite(r[term])]
        steps, values = [p[0] for p in points], [p[1] for p in points]
        ax.plot(steps, values, color="#2a6fdb", linewidth=1.4, marker="." if len(points) < 30 else None)
        if _spans_decades(values):
            ax.set_yscale("log")
        for i, (step, name) in enumerate(marked):
            if i:
                ax.axvline(step, color="#888", linestyle=":", linewidth=1)
            label = ax.annotate(name, (step, 1), xycoords=("data", "axes fraction"), fontsize=7, color="#555",
                                xytext=(2, -2), textcoords="offset points", va="top", clip_on=True)
            label.set_in_layout(False)  # a label near the right edge must not squeeze the panels
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(terms):]:
        ax.set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
