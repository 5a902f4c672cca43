"""A training run's directory (names in :mod:`slotlab.io.layout`): claiming it for a run or a
resumed run, and its append-only log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from slotlab.config import ConfigError
from slotlab.io.checkpoints import checkpoint_dirs
from slotlab.io.files import drop_unfinished_line, output_dir, write_atomic
from slotlab.io.layout import MODEL_DIR, RUN_CONFIG_FILE

logger = logging.getLogger("slotlab.train")


def prepare_output(out: Path, config_text: str, resume: bool) -> None:
    """Claim ``out`` for the run whose config (as YAML) is ``config_text``.

    Refuse to mix runs: a run with checkpoints continues only with --resume and the same
    config. A directory with a config but no checkpoint (a run that failed or was stopped
    before its first one) holds nothing to keep: it takes this run's config."""
    output_dir(out)
    saved = out / RUN_CONFIG_FILE
    trained = bool(checkpoint_dirs(out)) or (out / MODEL_DIR).is_dir()
    if trained and not saved.is_file():
        raise ConfigError(
            f"{out} holds checkpoints but no {RUN_CONFIG_FILE}, so the config they were trained with is unknown: "
            f"restore {saved}, or choose another --out"
        )
    if trained and not resume:
        raise ConfigError(f"{out} already holds a training run: pass --resume to continue it, or choose another --out")
    if trained and yaml.safe_load(saved.read_text()) != yaml.safe_load(config_text):
        raise ConfigError(
            f"--resume: the config differs from the one in {saved}; resume with the same preset and --set values"
        )
    if resume and not trained:
        logger.warning("--resume: %s holds no checkpoint yet; starting at step 0", out)
    elif saved.is_file() and not trained and saved.read_text() != config_text:
        logger.warning("%s was the config of a run stopped before its first checkpoint; replaced by this run's", saved)
    write_atomic(saved, config_text)


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (they will be produced again), and a last line
    that a kill cut short."""
    if not path.is_file():
        return
    if drop_unfinished_line(path):
        logger.warning("%s: dropped its last line, cut short when the run was stopped", path)
    kept = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number} is not JSON ({err}); the log is damaged: delete that line and "
                              "run again with --resume") from err
        if record.get("step", 0) <= step:
            kept.append(line)
    write_atomic(path, "".join(line + "\n" for line in kept))
