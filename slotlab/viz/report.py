"""A self-contained HTML report: a metrics table and pictures."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from slotlab.io.files import write_atomic


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def metrics_table(metrics: dict[str, dict]) -> str:
    """Rows = methods, columns = the union of their metric names (nested dicts are skipped)."""
    columns: list[str] = []
    for values in metrics.values():
        for key, value in values.items():
            if key not in columns and not isinstance(value, dict):
                columns.append(key)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *columns])
    rows = []
    for method, values in metrics.items():
        cells = "".join(f"<td>{_cell(values.get(c, ''))}</td>" for c in columns)
        rows.append(f"<tr><th>{html.escape(method)}</th>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report(path: str | Path, title: str, metrics: dict[str, dict], pictures: dict[str, Path], notes: list[str] = ()) -> Path:
    """Write an HTML page with the metrics table, notes and the PNG pictures embedded inline."""
    path = Path(path)
    blocks = []
    for caption, picture in pictures.items():
        data = base64.b64encode(Path(picture).read_bytes()).decode()
        blocks.append(f"<figure><img src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{image-rendering:pixelated;max-width:100%}}</style>
</head><body><h1>{html.escape(title)}</h1>{notes_html}{metrics_table(metrics)}{''.join(blocks)}</body></html>"""
    return write_atomic(path, page)
