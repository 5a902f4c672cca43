"""The HTML report: its structure (compact table, per-method sections, curves, pictures,
glossary), reading run directories, and the page in a real browser where one is installed."""

import base64
import io
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
import yaml
from PIL import Image

from slotlab.config import ConfigError
from slotlab.viz.curves import curves_png, loss_terms, stage_starts
from slotlab.viz.overlays import image_caption, save_image
from slotlab.viz.report import COMPACT_COLUMNS, UNKNOWN_SUPERVISION, MethodSection, Report, render, write_report
from slotlab.viz.run_report import demo_report, read_log, runs_report, write_runs_report

from tests.browser import CHROMIUM, visit
from tests.conftest import tiny_train_config


def two_stage_log(steps: int = 40) -> list[dict]:
    records = []
    for step in range(2, steps + 1, 2):
        stage = "warmup" if step <= steps // 2 else "main"
        records.append({"step": step, "stage": stage, "lr": {"grouping": 1e-3},
                        "loss": 2.0 / step, "mse": 1.5 / step, "diffusion": 0.5 / math.sqrt(step)})
    return records


def picture(path, caption, size=(384, 200)):
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return save_image(Image.fromarray(pixels), path, caption)


@pytest.fixture
def sample_report(tmp_path) -> Report:
    probe = {f"probe_{k}": 0.25 for k in ("class_accuracy", "class_accuracy_majority_baseline", "centre_mse",
                                          "object_features_class_accuracy", "image_features_centre_mse")}
    glass = {"mbo_i": 0.412, "miou_i": 0.377, "fg_ari": 0.61, "supervision": "features: encoder reads a segmenter "
             "supervised on scenes class maps; training: generated scenes with pseudo masks",
             "train_seconds": 131.4, "train_steps": 600, "train_precision": "bf16", "protocol": "native",
             "preset": "glass-tiny", "recon_psnr": 14.2, "removal_objects": 0, "removal_success": float("nan"),
             "counts": {"mbo_i": 256}} | probe
    dino = {"mbo_i": 0.395, "miou_i": 0.351, "fg_ari": 0.58, "train_seconds": 88.0, "train_steps": 600,
            "protocol": "native", "preset": "dinosaur-tiny"} | probe
    methods = [
        MethodSection("dinosaur", dino, two_stage_log(), [picture(tmp_path / "d.png", "dinosaur picture")]),
        MethodSection("glass", glass, two_stage_log(), [picture(tmp_path / "g.png", "glass removal picture")]),
        MethodSection("blocks", {"mbo_i": 0.2, "miou_i": 0.18, "fg_ari": 0.1, "train_seconds": 0.0}),
        MethodSection("half-run", {}, two_stage_log(10), notes=["not finished: in progress"]),
    ]
    shared = [picture(tmp_path / "overlays.png", "Validation images and each method's slot masks", (1152, 1560))]
    return Report("slotlab demo: object discovery", methods, shared, ["256 scenes val images, seed 0."])


class Page(HTMLParser):
    """The parts of the page the tests look at."""

    def __init__(self, text: str):
        super().__init__()
        self.stack, self.tables, self.sections, self.images, self.details = [], [], {}, [], []
        self.section, self.text_in = None, {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.stack.append(tag)
        if tag == "table":
            self.tables.append({"headers": [], "rows": []})
        elif tag == "tr" and "tbody" in self.stack:
            self.tables[-1]["rows"].append([])
        elif tag == "th" and "thead" in self.stack:
            self.tables[-1]["headers"].append("")
        elif tag in ("th", "td") and "tbody" in self.stack:
            self.tables[-1]["rows"][-1].append("")
        elif tag == "section":
            self.section = attrs.get("id") or f"unnamed-{len(self.sections)}"
            self.sections[self.section] = ""
        elif tag == "img":
            self.images.append((self.section, attrs["src"]))
        elif tag == "details":
            self.details.append("")

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        if "thead" in self.stack and "th" in self.stack:
            self.tables[-1]["headers"][-1] += data
        elif "tbody" in self.stack and ("td" in self.stack or "th" in self.stack):
            self.tables[-1]["rows"][-1][-1] += data
        if self.section is not None:
            self.sections[self.section] += data
        if "details" in self.stack:
            self.details[-1] += data


def decoded(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_page_opens_with_the_compact_table_and_puts_every_other_number_in_its_section(sample_report):
    page = Page(render(sample_report))
    (table,) = page.tables
    assert table["headers"] == ["method", "mBOi", "mIoUi", "FG-ARI", "supervision", "train time", "steps"]
    rows = {row[0].rstrip(" !"): row[1:] for row in table["rows"]}
    assert list(rows) == ["dinosaur", "glass", "blocks", "half-run"]
    assert rows["glass"][:3] == ["0.412", "0.377", "0.610"] and rows["glass"][4:] == ["2 min 11 s", "600"]
    assert rows["glass"][3].startswith("features: encoder reads a segmenter")
    assert rows["dinosaur"][3] == UNKNOWN_SUPERVISION  # a row from outside slotlab without supervision says so
    glass = page.sections["m-glass"]
    compact = {key for key, _ in COMPACT_COLUMNS}
    for key in ("train_precision", "recon_psnr", "probe_object_features_class_accuracy", "counts.mbo_i"):
        assert key in glass and key not in compact
    assert "removal_success" in glass and "n/a" in glass
    assert "glass-tiny-compose" in glass  # the caveat its removal_objects == 0 calls for
    assert "not finished: in progress" in page.sections["m-half-run"]
    assert page.details and "mbo_i" in page.details[0]
    assert "probe_class_accuracy" in page.details[0] and "recon_psnr" in page.details[0]


def test_every_method_with_a_log_gets_its_curves_and_pictures_their_captions(sample_report):
    page = Page(render(sample_report))
    by_section = {}
    for section, src in page.images:
        by_section.setdefault(section, []).append(decoded(src))
    assert len(by_section["m-dinosaur"]) == 2 and len(by_section["m-glass"]) == 2  # curves + its picture
    assert len(by_section["m-half-run"]) == 1 and "m-blocks" not in by_section
    curves = by_section["m-glass"][0]
    assert curves.size[0] == 900  # three loss terms: three panels of 300 px
    assert "glass removal picture" in page.sections["m-glass"]
    shared = [text for name, text in page.sections.items() if not name.startswith("m-")]
    assert "Validation images and each method's slot masks" in shared[0]


def test_curves_have_one_panel_per_term_and_mark_stage_changes():
    log = two_stage_log()
    assert loss_terms(log) == ["loss", "mse", "diffusion"]
    assert stage_starts(log) == [(2, "warmup"), (22, "main")]
    assert stage_starts(log[:3] + [{"step": 6, "eval": {"mbo_i": 0.3}}] + log[3:]) == stage_starts(log)
    one = Image.open(io.BytesIO(curves_png(log, "x")))
    six = Image.open(io.BytesIO(curves_png([r | {f"t{i}": 1.0 for i in range(3)} for r in log], "x")))
    assert one.size[0] == 900 and six.size[0] == 1200 and six.size[1] > one.size[1]  # four columns, two rows
    with pytest.raises(ValueError, match="no loss values"):
        curves_png([{"step": 1, "stage": "a"}], "empty")


def test_captions_travel_in_the_png(tmp_path):
    path = picture(tmp_path / "p.png", "scene | reconstruction")
    assert image_caption(path) == "scene | reconstruction"
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert image_caption(tmp_path / "plain.png") == "plain.png"


def test_a_half_written_last_log_line_is_skipped_and_said(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    records, notes = read_log(log)
    assert [r["step"] for r in records] == [1, 2] and "line(s) [3]" in notes[0]


def write_run(run, steps=6, logged=6, model=True, evaluation=True, log=True, timed=True):
    """A run directory in the layout slotlab train writes (without training); its log says
    10 s a step (``timed``, as slotlab logs since it records train_seconds)."""
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_train_config(steps=steps)))
    if log:
        time = (lambda s: {"train_seconds": 10.0 * s}) if timed else (lambda s: {})
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "stage": "train", "loss": 1 / s} | time(s))
                                                   + "\n" for s in range(1, logged + 1)))
    if model:
        (run / "model").mkdir()
    if evaluation:
        (run / "eval.json").write_text(json.dumps({"protocol": "native", "images": 8, "metrics": {
            "mbo_i": 0.3, "miou_i": 0.2, "fg_ari": 0.1}, "counts": {"mbo_i": 8}}))
    return run


def test_directories_that_are_not_runs_are_refused_before_anything_is_written(tmp_path):
    good = write_run(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds neither config.yaml nor metrics.json"):
        write_runs_report([good, tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="is not a directory"):
        runs_report([tmp_path / "missing"])
    (tmp_path / "demo-running" / "runs").mkdir(parents=True)
    with pytest.raises(ConfigError, match="still running or stopped"):
        runs_report([tmp_path / "demo-running"])
    with pytest.raises(ConfigError, match="--out"):
        write_runs_report([good, good])
    assert not (tmp_path / "r.html").exists() and not (good / "report.html").exists()


def test_runs_without_logs_evaluation_or_final_model_say_what_is_missing(tmp_path):
    report = runs_report([write_run(tmp_path / "nolog", log=False, model=False, evaluation=False),
                          write_run(tmp_path / "running", steps=20, logged=7, model=False, evaluation=False),
                          write_run(tmp_path / "noeval", evaluation=False),
                          write_run(tmp_path / "untimed", timed=False)], overlays=False)
    nolog, running, noeval, untimed = report.methods
    assert any("no training log yet" in n and "train time" in n for n in nolog.notes) and not nolog.log
    assert "step 7 of 20" in running.notes[0] and "--resume" in running.notes[0] and len(running.log) == 7
    assert any("slotlab eval --checkpoint" in n for n in noeval.notes)
    assert any("no train time" in n for n in untimed.notes) and "train_seconds" not in untimed.metrics
    page = Page(render(report))
    assert "step 7 of 20" in page.sections["m-running"]
    rows = {row[0].rstrip(" !"): row[1:] for row in page.tables[0]["rows"]}
    assert rows["running"][4:] == ["1 min 10 s", "7 of 20 (unfinished)"]  # the time so far, said to be partial
    assert rows["noeval"][4:] == ["1 min 00 s", "6"]
    assert rows["nolog"][4:] == ["n/a", "n/a"] and rows["untimed"][4:] == ["n/a", "6"]
    # every row says what its run saw, read off its config: the tiny patch encoder alone, DINOSAUR's loss
    assert {row[3] for row in rows.values()} == {"features: none (fixed pixel and colour features); "
                                                 "training: none (reconstructs its encoder's features)"}


def test_a_trained_run_gets_its_metrics_curves_and_overlays(tmp_path):
    from slotlab.train.config import build_train_config
    from slotlab.train.trainer import train

    run = tmp_path / "dino"
    train(build_train_config(tiny_train_config(steps=4)), run, progress=False)
    (run / "eval.json").write_text(json.dumps({"protocol": "native", "metrics": {"mbo_i": 0.3}}))
    out = write_runs_report([run])
    assert out == run / "report.html"
    page = Page(out.read_text())
    assert page.tables[0]["rows"][0][:2] == ["dino", "0.300"]  # finished and evaluated: no "!" flag
    logged = [json.loads(line)["train_seconds"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(logged) and logged[0] > 0
    assert page.tables[0]["rows"][0][5:] == [f"{logged[-1]:.1f} s", "4"]
    images = [decoded(src) for section, src in page.images if section == "m-dino"]
    assert len(images) == 2  # curves, then the overlay picture of its model on data.val
    assert "slot masks on the first 8 images" in page.sections["m-dino"]


def test_a_demo_directory_reads_back_as_the_demo_wrote_it(tmp_path, sample_report):
    demo = tmp_path / "demo"
    write_run(demo / "runs" / "glass")
    (demo / "metrics.json").write_text(json.dumps({"glass": {"mbo_i": 0.4, "removal_objects": 0}, "blocks": {}}))
    picture(demo / "overlays.png", "all methods' masks")
    (demo / "tasks" / "glass").mkdir(parents=True)
    picture(demo / "tasks" / "glass" / "removal.png", "a removal")
    report = demo_report(demo)
    assert [m.name for m in report.methods] == ["glass", "blocks"]
    assert len(report.methods[0].log) == 6 and report.methods[0].pictures[0].name == "removal.png"
    html = render(runs_report([demo]))
    assert "all methods&#x27; masks" in html and "a removal" in html and "glass-tiny-compose" in html
    both = runs_report([demo, write_run(tmp_path / "other")], overlays=False)
    assert [m.name for m in both.methods] == ["demo/glass", "demo/blocks", "other"]


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no browser: {CHROMIUM} is absent (apt-get install chromium)")
def test_the_page_in_headless_chromium_fits_1280_px_without_console_errors(tmp_path, sample_report):
    page = write_report(tmp_path / "report.html", sample_report)
    seen = visit(page, width=1280)
    assert seen.errors == []
    assert seen.viewport_width == 1280 and seen.scroll_width <= 1280, "the page scrolls sideways"
    shot = Image.open(io.BytesIO(seen.screenshot))
    assert shot.size[0] == 1280 and shot.size[1] > 900
    (tmp_path / "screenshot.png").write_bytes(seen.screenshot)  # to look at: pytest --basetemp DIR


def test_slotlab_report_command(tmp_path, capsys):
    from slotlab.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "holds neither config.yaml nor metrics.json" in capsys.readouterr().err
    run = write_run(tmp_path / "run", model=False, evaluation=False, steps=20, logged=7)
    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    page = Page((run / "report.html").read_text())
    assert "step 7 of 20" in page.sections["m-run"] and "no overlay picture" in page.sections["m-run"]


def test_a_resumed_run_s_clock_continues_from_its_log(tmp_path):
    from slotlab.train.tracking import logged_seconds

    log = tmp_path / "metrics.jsonl"
    assert logged_seconds(log) == 0.0
    log.write_text('{"step": 1, "train_seconds": 4.5}\n{"step": 2, "eval": {}, "train_seconds": 9.25}\n{"step": 3')
    assert logged_seconds(log) == 9.25  # the last complete record's, a cut line skipped
