"""Gather a :class:`~slotlab.viz.report.Report` from directories on disk: training runs
(``slotlab train``: config.yaml, metrics.jsonl, eval.json, model/) and demo outputs
(``slotlab demo``: metrics.json, runs/NAME/, overlays.png, tasks/NAME/*.png).

What a directory lacks (a log, an evaluation, a final model) is said in the report; a
directory that is neither kind is refused with a message naming what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from slotlab.config import ConfigError
from slotlab.io.checkpoints import checkpoint_dirs
from slotlab.io import layout
from slotlab.train.supervision import describe_supervision
from slotlab.train.tracking import SECONDS
from slotlab.viz.report import MethodSection, Report, write_report

NUM_SHOWN = 8  # validation images in a run's overlay picture


def read_log(path: Path) -> tuple[list[dict], list[str]]:
    """The records of a JSONL training log, and notes on lines that could not be read (a run
    in progress may be writing its last line)."""
    records, bad = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            bad.append(number)
    notes = [f"{path}: skipped unreadable line(s) {bad}"] if bad else []
    return records, notes


def _log_section(section: MethodSection, run: Path) -> None:
    log = run / layout.LOG_FILE
    if not log.is_file():
        section.notes.append(f"no training log yet ({log} is missing): no curves, train time or steps")
        return
    section.log, notes = read_log(log)
    section.notes += notes
    if not section.log:
        section.notes.append(f"{log} holds no complete record yet: no curves, train time or steps")


def _training_time(section: MethodSection, run: Path) -> None:
    """Train time and steps from the log (its last record), where the row lacks them."""
    if not section.log:
        return
    section.metrics.setdefault("train_steps", section.log[-1]["step"])
    timed = [r[SECONDS] for r in section.log if isinstance(r.get(SECONDS), (int, float))]
    if timed:
        section.metrics.setdefault("train_seconds", timed[-1])
    elif "train_seconds" not in section.metrics:
        section.notes.append(f"no train time: {run / layout.LOG_FILE} was written before slotlab logged {SECONDS}")


def _supervision(section: MethodSection, config: dict) -> None:
    """What the run saw besides images, read off its saved config, where the row lacks it."""
    if "supervision" in section.metrics:
        return
    try:
        section.metrics["supervision"] = describe_supervision(config)
    except (ValueError, KeyError, TypeError) as err:  # a config slotlab did not write
        section.notes.append(f"supervision unknown: {err}")


def _total_steps(config: dict) -> int:
    return sum(stage.get("steps", 0) for stage in config.get("stages", []))


def _progress_note(run: Path, config: dict, log: list[dict]) -> str | None:
    """None for a finished run (its model/ exists), else how far it got."""
    if (run / layout.MODEL_DIR).is_dir():
        return None
    total = _total_steps(config)
    logged = log[-1]["step"] if log else 0
    checkpoints = checkpoint_dirs(run)
    saved = f"last checkpoint {checkpoints[-1].name}" if checkpoints else "no checkpoint yet"
    return (f"not finished (no {run / layout.MODEL_DIR}): in progress or stopped at step {logged} of {total} "
            f"({saved}); these numbers and curves are partial. A stopped run continues with slotlab train --resume.")


def _overlays(run: Path, name: str, config: dict, seed: int) -> tuple[list[Path], list[str]]:
    """A picture of the run's slot masks on its first validation images, from model/ or else its
    last checkpoint; a note instead where no weights or no validation data can be read."""
    from slotlab.data.registry import build_dataset
    from slotlab.data.sample import collate
    from slotlab.methods import ObjectCentricModel
    from slotlab.viz.overlays import overlay_grid, save_image, segmentation

    final = run / layout.MODEL_DIR
    weights = final if final.is_dir() else next(reversed(checkpoint_dirs(run)), None)
    spec = (config.get("data") or {}).get("val")
    if weights is None or spec is None:
        missing = "no weights (model/ or a checkpoint)" if weights is None else "no data.val in its config"
        return [], [f"no overlay picture: the run has {missing}"]
    try:
        val = build_dataset(spec)
        shown = collate([val[i] for i in range(min(NUM_SHOWN, len(val)))])
        masks = ObjectCentricModel.from_pretrained(weights).decompose(shown.image, seed=seed).masks
    except (ConfigError, FileNotFoundError, ValueError) as err:  # e.g. a model without slots
        return [], [f"no overlay picture: {err}"]
    grid = overlay_grid(shown.image, {"ground truth": shown.instance_mask, name: segmentation(masks)}, scale=3)
    caption = f"{name}: slot masks on the first {len(shown)} images of {spec} (weights: {weights.name}/)"
    return [save_image(grid, run / f"overlays-{weights.name}.png", caption)], []


def training_run(run: Path, name: str | None = None, overlays: bool = True) -> MethodSection:
    """The section of one `slotlab train` run directory."""
    config = yaml.safe_load((run / layout.RUN_CONFIG_FILE).read_text()) or {}
    section = MethodSection(name or run.name)
    _log_section(section, run)
    progress = _progress_note(run, config, section.log)
    if progress:
        section.notes.insert(0, progress)
    evaluation = run / layout.EVAL_FILE
    if evaluation.is_file():
        result = json.loads(evaluation.read_text())
        section.metrics = result.pop("metrics", {}) | result
    elif progress is None:
        section.notes.append(f"not evaluated ({evaluation} is missing): "
                             f"slotlab eval --checkpoint {run / layout.MODEL_DIR} --out {evaluation}")
    section.metrics = {"method": config.get("method")} | section.metrics
    _supervision(section, config)
    _training_time(section, run)
    if progress and section.log:
        section.metrics["train_steps"] = f"{section.log[-1]['step']} of {_total_steps(config)} (unfinished)"
    if overlays:
        pictures, notes = _overlays(run, section.name, config, int(config.get("seed", 0)))
        section.pictures += pictures
        section.notes += notes
    return section


def demo_report(out: Path, results: dict | None = None, notes: list[str] = ()) -> Report:
    """The report of a demo output ``out``: ``results`` are its metrics rows (default: read
    from its metrics.json); curves from runs/NAME/, pictures from overlays.png and tasks/NAME/."""
    if results is None:
        results = json.loads((out / layout.METRICS_FILE).read_text())
    sections = []
    for name, row in results.items():
        section = MethodSection(name, metrics=dict(row))
        run = out / layout.RUNS_DIR / name
        if (run / layout.RUN_CONFIG_FILE).is_file():
            _log_section(section, run)
            _supervision(section, yaml.safe_load((run / layout.RUN_CONFIG_FILE).read_text()) or {})
        section.pictures = sorted((out / layout.TASKS_DIR / name).glob("*.png"))
        sections.append(section)
    shared = [out / layout.OVERLAYS_FILE] if (out / layout.OVERLAYS_FILE).is_file() else []
    return Report("slotlab demo: object discovery on built-in scenes", sections, shared, list(notes))


def _kind(path: Path) -> str:
    if (path / layout.METRICS_FILE).is_file() and (path / layout.RUNS_DIR).is_dir():
        return "demo"
    if (path / layout.RUN_CONFIG_FILE).is_file():
        return "run"
    if path.is_dir() and (path / layout.RUNS_DIR).is_dir() and not (path / layout.METRICS_FILE).exists():
        raise ConfigError(f"{path} looks like a demo still running or stopped ({layout.RUNS_DIR}/ but no "
                          f"{layout.METRICS_FILE}): report its runs instead, "
                          f"e.g. slotlab report {path / layout.RUNS_DIR}/*")
    what = ("is not a directory" if not path.is_dir()
            else f"holds neither {layout.RUN_CONFIG_FILE} nor {layout.METRICS_FILE}")
    raise ConfigError(f"{path} {what}: give the directory of a training run (slotlab train --out) or of a "
                      f"demo (slotlab demo --out)")


def runs_report(paths: list[Path], overlays: bool = True) -> Report:
    """One report of the training runs and demo outputs in ``paths``."""
    if not paths:
        raise ConfigError("give at least one run directory")
    kinds = [_kind(Path(p)) for p in paths]  # all checked before any work
    if kinds == ["demo"]:
        return demo_report(Path(paths[0]))
    names = [Path(p).name for p in paths]
    report = Report(f"slotlab report: {', '.join(names)}", [])
    for path, kind, name in zip(map(Path, paths), kinds, names):
        if kind == "demo":
            demo = demo_report(path)
            for section in demo.methods:
                section.name = f"{name}/{section.name}"
            report.methods += demo.methods
            report.pictures += demo.pictures
        else:
            unique = name if names.count(name) == 1 else str(path)
            report.methods.append(training_run(path, unique, overlays))
    return report


def write_runs_report(paths: list[Path], out: Path | None = None) -> Path:
    """Write the report of ``paths`` to ``out`` (default: RUN_DIR/report.html for one directory)."""
    if out is None:
        if len(paths) != 1:
            raise ConfigError("several directories: say where the report goes with --out FILE")
        out = Path(paths[0]) / layout.REPORT_FILE
    return write_report(out, runs_report(paths))
