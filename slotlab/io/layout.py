"""The names of everything slotlab writes to disk: model directories, training runs and
their checkpoints, demo outputs. Other modules import these names; none spells them.

A model directory (``save_pretrained``)::

    config.json            method, its config, the shapes of parts built from weight files
    model.safetensors      the weights

A training run (``slotlab train --out RUN``)::

    config.yaml            the run's whole TrainConfig (``--resume`` checks it)
    metrics.jsonl          one JSON record per logged step or evaluation
    checkpoints/step-N/    a model directory + optimizer.pt + state.json (written last)
    model/                 the final model directory
    eval.json              the evaluation at the end (``slotlab train`` without --no-eval)

A demo (``slotlab demo --out DIR``): metrics.json, overlays.png, report.html and the
folders runs/ (one training run per method), generated/ (generated data), tasks/.
``slotlab reconstruct --out DIR``: metrics.json and examples.png.
"""

from __future__ import annotations

from pathlib import Path

# ---- a model directory ------------------------------------------------------------------
MODEL_CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# ---- a training run ---------------------------------------------------------------------
RUN_CONFIG_FILE = "config.yaml"
LOG_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"
EVAL_FILE = "eval.json"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"  # step and stage of a checkpoint; written last, so it marks one complete
STEP_PREFIX = "step-"
TMP_MODEL_DIR = ".tmp-model"  # the final model while it is written

# ---- a demo or a reconstruction -------------------------------------------------------------
METRICS_FILE = "metrics.json"
EXAMPLES_FILE = "examples.png"
OVERLAYS_FILE = "overlays.png"
REPORT_FILE = "report.html"
RUNS_DIR = "runs"
GENERATED_DIR = "generated"
TASKS_DIR = "tasks"


def step_dir_name(step: int) -> str:
    """The folder of the checkpoint of ``step`` under ``checkpoints/``."""
    return f"{STEP_PREFIX}{step:08d}"


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder named by :func:`step_dir_name`."""
    return int(path.name[len(STEP_PREFIX):])
