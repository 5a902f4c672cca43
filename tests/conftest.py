import os
import subprocess
import sys

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """Artefacts a test caches (the demo's segmenter) stay in this test session's folder."""
    os.environ["SLOTLAB_CACHE"] = str(tmp_path_factory.mktemp("slotlab-cache"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Two test workers share two cores: one thread each avoids oversubscription."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_train_config(method: str = "dinosaur", steps: int = 6, **extra) -> dict:
    """A preset dict small enough to train in seconds on a CPU."""
    encoder = {"name": "patch", "image_size": 32, "patch_size": 4, "dim": 16}
    model = {
        "encoder": encoder,
        "slot_attention": {"slot_dim": 16, "num_slots": 4, "iters": 2, "mlp_hidden": 32},
    }
    if method == "dinosaur":
        model["decoder"] = {"hidden_dim": 32, "hidden_layers": 1}
        lr = {"grouping": 1e-3, "decoder": 1e-3}
    else:
        raise ValueError(method)
    config = {
        "method": method,
        "model": model,
        "data": {"train": "scenes?split=train&size=32&resolution=32", "val": "scenes?split=val&size=8&resolution=32",
                 "batch_size": 4},
        "stages": [{"name": "train", "steps": steps, "lr": lr}],
        "log_every": 1,
        "checkpoint_every": 3,
    }
    config.update(extra)
    return config


@pytest.fixture(scope="session")
def segmenter_dir(tmp_path_factory):
    """A random-weight segmenter checkpoint: what the CPU presets' encoder.semantic_model names."""
    from slotlab.methods.segmenter import Segmenter, SegmenterConfig

    torch.manual_seed(0)
    return Segmenter(SegmenterConfig()).save_pretrained(tmp_path_factory.mktemp("segmenter"))


def run_slotlab(*args, **kwargs) -> subprocess.CompletedProcess:
    """``slotlab ARGS`` in a child process (one thread), its output captured as text."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "slotlab.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env, **kwargs)


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user's mistake: exit code 2, no traceback, and a message holding every fragment."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-2000:]


@pytest.fixture(scope="session")
def glass_decoder_dir(tmp_path_factory):
    """A random-weight pretrained decoder: what model.decoder_init of the CPU GLASS presets names."""
    from slotlab.config import load_preset
    from slotlab.train.config import build_train_config
    from slotlab.methods import get_method

    torch.manual_seed(0)
    config = build_train_config(load_preset("glass-tiny-decoder"))
    return get_method("glass")(config.model).save_pretrained(tmp_path_factory.mktemp("decoder"))


@pytest.fixture(scope="session")
def glass_preset_overrides(glass_decoder_dir):
    """The random-weight pretrained decoder (model.decoder_init of the CPU GLASS presets)."""
    return [f"model.decoder_init={glass_decoder_dir}"]


@pytest.fixture(scope="session")
def glass_twin_dir(tmp_path_factory) -> str:
    """An untrained GLASS of the paper preset on tiny twins: enough for the commands that load one."""
    from slotlab.config import load_preset
    from slotlab.methods import get_method
    from slotlab.methods.glass import PAPER_TWIN_OVERRIDES
    from slotlab.train.config import build_train_config

    torch.manual_seed(0)
    config = build_train_config(load_preset("glass-coco"), list(PAPER_TWIN_OVERRIDES))
    return str(get_method("glass")(config.model).save_pretrained(tmp_path_factory.mktemp("glass")))


@pytest.fixture(scope="session")
def generated_scenes(tmp_path_factory) -> str:
    """A spec of 16 data-engine samples (scenes backend, 32 px): GLASS's training data in tests."""
    from slotlab.config import from_dict
    from slotlab.datagen.config import GenerateConfig
    from slotlab.datagen.run import run_generation

    out = tmp_path_factory.mktemp("generated")
    config = from_dict(GenerateConfig, {
        "backend": "scenes", "num": 16, "shard_size": 8,
        "prompts": {"source": "template", "label_set": "scenes", "dataset": "scenes?split=train&size=32&resolution=32"},
        "scenes": {"resolution": 32},
    })  # fmt: skip
    run_generation(config, out, resume=False, progress=False)
    return f"generated:{out}"
