"""`slotlab train`, `slotlab eval` and `slotlab presets`."""

from __future__ import annotations

from pathlib import Path

from slotlab.cli.common import add_checkpoint_arguments, command, load_model_from_args
from slotlab.config import int_option
from slotlab.io.files import output_file
from slotlab.io.layout import EVAL_FILE, RUN_CONFIG_FILE
from slotlab.io.results import results_json, write_results


def add_train(sub) -> None:
    command(
        sub, "train", "train a method from a preset",
        "Train a method from a preset (slotlab presets lists them) into --out: checkpoints/, "
        "metrics.jsonl, config.yaml and, at the end, model/ (load with Method.from_pretrained). "
        "Multi-GPU / multi-node: start the same command with `accelerate launch` or `torchrun`.",
        _train_arguments, _run_train,
    )


def _train_arguments(p) -> None:
    p.add_argument("--preset", required=True, help="preset name or path to a YAML file")
    p.add_argument("--out", default=None, help="run directory (default: runs/PRESET)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set stages.0.steps=100 or --set model.slot_attention.num_slots=5 "
                   "(repeatable; values are parsed as YAML)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation on data.val after training")


def _run_train(args) -> int:
    from slotlab.config import load_preset
    from slotlab.train.config import build_train_config
    from slotlab.train.trainer import train

    config = build_train_config(load_preset(args.preset), args.overrides)
    out = Path(args.out or Path("runs") / Path(args.preset).stem)
    result = train(config, out, resume=args.resume)
    resumed = f" (resumed at step {result.start_step} of {result.steps})" if result.start_step else ""
    print(f"trained {result.steps_trained} steps{resumed} in {result.train_seconds:.1f} s ({result.steps_per_second:.2f} steps/s, "
          f"{result.precision}); model in {result.model_dir}")
    from slotlab.methods import MaskModel, Method

    if not args.no_eval and isinstance(result.model, MaskModel):
        saved = Method.from_pretrained(result.model_dir)  # evaluates what was saved
        _evaluate_and_write(saved, config.data.val, config.eval_protocol, out / EVAL_FILE)
    return 0


def add_eval(sub) -> None:
    command(
        sub, "eval", "evaluate a trained model's masks under a metric protocol",
        "Load a model directory (save_pretrained / a run's model/ or checkpoints/step-N) and "
        "report mBO, mIoU and FG-ARI on a dataset under a named protocol.",
        _eval_arguments, _run_eval,
    )


def _eval_arguments(p) -> None:
    add_checkpoint_arguments(p)
    p.add_argument("--data", default=None, help="dataset spec (default: the val set of the run that wrote the checkpoint, "
                   "else the built-in scenes val split)")
    p.add_argument("--protocol", default=None, help="metric protocol: native, spot, spot-voc, spot-movi, glass, glass-authors, msf (default: the "
                   "eval_protocol of the run that wrote the checkpoint, else native)")
    p.add_argument("--batch-size", type=int_option(low=1), default=32, help="images per forward pass (default: %(default)s)")
    p.add_argument("--seed", type=int_option(low=0), default=0,
                   help="seed of the slots' initial noise, which moves the masks (up to 0.02 mIoU_i over five seeds for "
                   "glass-tiny on scenes test): evaluate several seeds to average it out (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the metrics as JSON to this file")


def _run_eval(args) -> int:
    run = _run_config(Path(args.checkpoint))
    data = args.data or run.get("data", {}).get("val") or "scenes?split=val&size=256"
    protocol = args.protocol or run.get("eval_protocol") or "native"
    out = output_file(args.out) if args.out else None  # checked before the evaluation, not after
    from slotlab.methods import MaskModel

    model = load_model_from_args(args)
    if not isinstance(model, MaskModel):
        raise ValueError(
            f"{args.checkpoint} holds a {model.method!r} model, which has no slots: its masks are not scored as slot masks"
        )
    _evaluate_and_write(model, data, protocol, out, args.batch_size, args.seed)
    return 0


def _run_config(checkpoint: Path) -> dict:
    """The config.yaml of the run a checkpoint belongs to (run/model or run/checkpoints/step-N)."""
    import yaml

    for run in (checkpoint.parent, checkpoint.parent.parent):
        config = run / RUN_CONFIG_FILE
        if config.is_file():
            return yaml.safe_load(config.read_text()) or {}
    return {}


def _evaluate_and_write(model, data: str, protocol: str, out: Path | None, batch_size: int = 32, seed: int = 0) -> dict:
    from slotlab.data.registry import build_dataset
    from slotlab.train.evaluate import evaluate_model

    metrics = evaluate_model(model, build_dataset(data), protocol=protocol, batch_size=batch_size, seed=seed)
    print(f"protocol: {protocol}  data: {data}  seed: {seed}")
    print(results_json(metrics))
    if out is not None:
        write_results(out, metrics)
    return metrics


def add_presets(sub) -> None:
    command(sub, "presets", "list the training presets", "List the training presets shipped with slotlab.", None, _run_presets)


def _run_presets(args) -> int:
    from slotlab.config import list_presets

    print("\n".join(list_presets()))
    return 0


def add_report(sub) -> None:
    command(
        sub, "report", "write report.html for training runs or demo outputs: metrics, curves, overlays",
        "Write one HTML page for the given directories (slotlab train --out runs, slotlab demo --out "
        "outputs, or a mix): a compact table of mBO_i, mIoU_i, FG-ARI, supervision, train time and steps, then per "
        "run every other number, its training-loss curves per term and its overlay pictures. A run still training "
        "or stopped, without logs or without eval.json is reported with what it lacks.",
        _report_arguments, _run_report,
    )


def _report_arguments(p) -> None:
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run or demo directories")
    p.add_argument("--out", type=Path, default=None,
                   help="the HTML file to write (default: RUN_DIR/report.html for one directory; required for several)")


def _run_report(args) -> int:
    from slotlab.viz.run_report import write_runs_report

    print(f"wrote {write_runs_report(args.runs, args.out)}")
    return 0
