"""A training run's directory (names in :mod:`slotlab.io.layout`): claiming it for a run or a
resumed run, and its append-only log."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import yaml

from slotlab.config import ConfigError, to_dict
from slotlab.io.checkpoints import checkpoint_dirs
from slotlab.io.files import drop_unfinished_line, output_dir, write_atomic
from slotlab.io.layout import MODEL_DIR, RUN_CONFIG_FILE

logger = logging.getLogger("slotlab.train")


def prepare_output(out: Path, config_text: str, resume: bool, parse: Callable[[dict], Any]) -> None:
    """Claim ``out`` for the run whose config (as YAML) is ``config_text``.

    Refuse to mix runs: a run with checkpoints continues only with --resume and the same
    config, compared as ``parse`` reads them (the typed config: a file written before a
    section was typed, with its defaults left out, is the same config); the resumed run's
    file is rewritten in today's form. A directory with a config but no checkpoint (a run
    that failed or was stopped before its first one) holds nothing to keep: it takes this
    run's config."""
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
    if trained:
        check_same_config(saved, yaml.safe_load(config_text), parse)
    if resume and not trained:
        logger.warning("--resume: %s holds no checkpoint yet; starting at step 0", out)
    elif saved.is_file() and not trained and saved.read_text() != config_text:
        logger.warning("%s was the config of a run stopped before its first checkpoint; replaced by this run's", saved)
    write_atomic(saved, config_text)


def check_same_config(saved: Path, config: dict, parse: Callable[[dict], Any]) -> None:
    """Refuse to resume the run whose config file is ``saved`` with ``config`` unless both read
    the same through ``parse``; the message names the file, what differs and the fix."""
    try:
        data = yaml.safe_load(saved.read_text())
        previous = parse(data if isinstance(data, dict) else {})
    except (ConfigError, yaml.YAMLError) as err:
        raise ConfigError(
            f"--resume: {saved} cannot be read as a config of this slotlab ({err}); it was written by an older "
            f"one or edited. Edit {saved} so that it reads (the message names the key), or choose another --out"
        ) from None
    differences = _differences(previous, parse(config))
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise ConfigError(f"--resume: the config differs from the one in {saved} ({shown}); resume with the same "
                          "preset and --set values")


def _differences(saved: Any, now: Any, where: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs, with both values."""
    saved, now = to_dict(saved), to_dict(now)
    if isinstance(saved, dict) and isinstance(now, dict):
        return [line for key in dict.fromkeys([*saved, *now])
                for line in _differences(saved.get(key), now.get(key), f"{where}.{key}" if where else str(key))]
    return [] if saved == now else [f"{where or 'config'}: {saved!r} in the file, {now!r} now"]


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
