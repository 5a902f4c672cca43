"""A self-contained HTML report (pictures inlined): a compact table of the headline numbers,
one section per method with every other number, its training curves and pictures, and a
collapsible glossary. It is built from a :class:`Report`, whoever gathered it (the demo or
:mod:`slotlab.viz.run_report` reading run directories)."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from slotlab.io.files import write_atomic
from slotlab.viz.curves import curves_png
from slotlab.viz.glossary import GLOSSARY, caveats, entries_for
from slotlab.viz.overlays import image_caption

#: The compact table's columns after the method: (row key, header HTML).
COMPACT_COLUMNS = (
    ("mbo_i", "mBO<sub>i</sub>"),
    ("miou_i", "mIoU<sub>i</sub>"),
    ("fg_ari", "FG-ARI"),
    ("supervision", "supervision"),
    ("train_seconds", "train time"),
    ("train_steps", "steps"),
)
HIGHER_IS_BETTER = ("mbo_i", "miou_i", "fg_ari")
#: A row from outside slotlab whose supervision nothing says (its section's notes say why).
UNKNOWN_SUPERVISION = "unknown (see its section)"


@dataclass
class MethodSection:
    """What the report shows of one method (or baseline): its metrics row (nested dicts are
    flattened), its training log records, its pictures (PNG files) and notes saying what is
    missing or what its results call for."""

    name: str
    metrics: dict = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    pictures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    title: str
    methods: list[MethodSection]
    pictures: list[Path] = field(default_factory=list)  # shared by the methods (e.g. all their overlays)
    notes: list[str] = field(default_factory=list)


def flatten(row: dict, prefix: str = "") -> dict:
    """Nested dicts -> one level with dotted names ("counts.mbo_i")."""
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def format_value(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if key.endswith("seconds") and isinstance(value, (int, float)):
        minutes, seconds = divmod(float(value), 60)
        return f"{int(minutes)} min {seconds:02.0f} s" if minutes else f"{seconds:.1f} s"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _anchor(name: str) -> str:
    return "m-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _best(methods: list[MethodSection]) -> dict[str, float]:
    best = {}
    for key in HIGHER_IS_BETTER:
        values = [m.metrics[key] for m in methods if isinstance(m.metrics.get(key), (int, float))
                  and not math.isnan(m.metrics[key])]
        if len(values) > 1:
            best[key] = max(values)
    return best


def compact_table(methods: list[MethodSection]) -> str:
    best = _best(methods)
    head = "".join(f"<th title='{html.escape(GLOSSARY.get(key, ''), quote=True)}'>{label}</th>"
                   for key, label in COMPACT_COLUMNS)
    rows = []
    for m in methods:
        cells = []
        for key, _ in COMPACT_COLUMNS:
            value = m.metrics.get(key)
            text = UNKNOWN_SUPERVISION if key == "supervision" and value is None else format_value(key, value)
            css = "text" if key == "supervision" else "num"
            if key in best and value == best[key]:
                css += " best"
            cells.append(f"<td class='{css}'>{html.escape(text)}</td>")
        status = " <span class='flag'>!</span>" if m.notes else ""
        rows.append(f"<tr><th><a href='#{_anchor(m.name)}'>{html.escape(m.name)}</a>{status}</th>{''.join(cells)}</tr>")
    return (f"<table class='compact'><thead><tr><th>method</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _figure(png: bytes, caption: str, kind: str = "plot") -> str:
    data = base64.b64encode(png).decode()
    return (f"<figure class='{kind}'><img src='data:image/png;base64,{data}' alt='{html.escape(caption, quote=True)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _picture(path: Path) -> str:
    return _figure(Path(path).read_bytes(), image_caption(path), "picture")


def details(m: MethodSection) -> str:
    """A method's section: its notes, every number not in the compact table, curves, pictures."""
    shown = {key for key, _ in COMPACT_COLUMNS}
    numbers = {k: v for k, v in flatten(m.metrics).items() if k not in shown}
    parts = [f"<section id='{_anchor(m.name)}'><h2>{html.escape(m.name)}</h2>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in m.notes + caveats(m.name, m.metrics)]
    if numbers:
        items = "".join(f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(format_value(k, v))}</dd></div>"
                        for k, v in numbers.items())
        parts.append(f"<dl class='numbers'>{items}</dl>")
    if m.log:
        caption = f"{m.name}: training loss per term against step (dotted lines: a new stage starts)"
        parts.append(_figure(curves_png(m.log, m.name), caption))
    parts += [_picture(p) for p in m.pictures]
    parts.append("</section>")
    return "".join(parts)


def glossary(report: Report) -> str:
    names = {k for m in report.methods for k in flatten(m.metrics)} | {m.name for m in report.methods}
    names |= {key for key, _ in COMPACT_COLUMNS}
    items = "".join(f"<dt>{html.escape(term.rstrip('.'))}{'*' if term.endswith('.') else ''}</dt>"
                    f"<dd>{html.escape(text)}</dd>" for term, text in entries_for(names).items())
    return f"<details class='glossary'><summary>Glossary: what each number means</summary><dl>{items}</dl></details>"


STYLE = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;background:#f6f7f9;margin:0}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:0 0 10px}
p{margin:6px 0}.lead{color:#4a5263}
section,.glossary,table.compact{background:#fff;border:1px solid #dde1e8;border-radius:8px}
section{padding:16px 20px;margin:18px 0}
table.compact{width:100%;border-collapse:separate;border-spacing:0;margin:16px 0;overflow:hidden}
.compact th,.compact td{padding:8px 12px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top}
.compact thead th{background:#eef1f6;font-weight:600;font-size:14px;cursor:help}
.compact tbody tr:last-child>*{border-bottom:0}
.compact td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.compact td.text{font-size:13px;color:#3a4252;max-width:420px}
.compact td.best{font-weight:700;color:#0b5cad}
.compact a{color:#0b5cad;text-decoration:none}.flag{color:#b25b00;font-weight:700}
.note{background:#fff7e6;border-left:3px solid #e0a030;padding:6px 10px;font-size:14px}
dl.numbers{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:2px 24px;margin:10px 0}
dl.numbers div{display:flex;justify-content:space-between;gap:12px;border-bottom:1px dotted #d5d9e0;padding:2px 0}
dl.numbers dt{font:12.5px ui-monospace,Menlo,Consolas,monospace;color:#4a5263;flex:none}
dl.numbers dd{margin:0;font-variant-numeric:tabular-nums;text-align:right;min-width:0;overflow-wrap:anywhere}
figure{margin:14px 0}figure img{display:block;max-width:100%;height:auto;border:1px solid #e3e6ec}
figure.picture img{image-rendering:pixelated}
figcaption{font-size:13px;color:#4a5263;margin-top:4px}
.glossary{padding:10px 20px;margin:18px 0}.glossary summary{cursor:pointer;font-weight:600}
.glossary dt{font:13px ui-monospace,Menlo,Consolas,monospace;margin-top:8px}.glossary dd{margin:0 0 0 16px;font-size:14px}
"""


def render(report: Report) -> str:
    """The page's HTML."""
    notes = "".join(f"<p class='lead'>{html.escape(n)}</p>" for n in report.notes)
    pictures = "".join(_picture(p) for p in report.pictures)
    shared = f"<section><h2>Pictures</h2>{pictures}</section>" if pictures else ""
    body = (f"<h1>{html.escape(report.title)}</h1>{notes}{compact_table(report.methods)}{glossary(report)}"
            f"{shared}{''.join(details(m) for m in report.methods)}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>")


def write_report(path: str | Path, report: Report) -> Path:
    """Write the page of ``report`` to ``path`` atomically."""
    return write_atomic(Path(path), render(report))
