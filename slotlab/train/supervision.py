"""What supervision a trained model saw, read off its saved training config.

A result table compares methods fairly only if each row says what besides images went into
it: features from an encoder pretrained with labels (or a segmenter supervised on class
maps), pseudo masks taken from a generator's ground truth or from diffusion attention, a
decoder pretrained on someone else's data. :func:`describe_supervision` answers that for
any config ``slotlab train`` saved (``RUN/config.yaml``), one phrase per part:
``features: ...; training: ...[; decoder: ...]``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from slotlab.data.generated import RunLayout
from slotlab.data.registry import DatasetError, parse_spec
from slotlab.io.layout import RUN_CONFIG_FILE
from slotlab.nn.encoders.shipped import is_shipped, provenance

#: What each encoder family's features learnt from (patch: see :func:`_features`).
ENCODER_FEATURES = {
    "patch": "none (fixed pixel and colour features)",
    "cnn": "none (a CNN trained with the method, on images only)",
    "cifar_resnet": "CIFAR ResNet pretrained with CIFAR-10 class labels",
    "ssl": "none (a CNN trained on images without labels: ssl encoder)",
    "dinov2": "DINOv2, self-supervised on LVD-142M images (no labels)",
    "dino": "DINO, self-supervised on ImageNet images (no labels)",
    "mae": "MAE, self-supervised on ImageNet images (no labels)",
}

#: What each method's own training objective reads besides images (glass: :func:`_glass`).
METHOD_TRAINING = {
    "dinosaur": "none (reconstructs its encoder's features)",
    "spot": "none (reconstructs its encoder's features)",
    "slate": "none (predicts the codes of a VQ-VAE trained on images)",
    "slotdiffusion": "none (denoises the latents of a VQ-VAE trained on images)",
    "vqvae": "none (reconstructs images)",
    "self_distillation": "none (self-distillation on images)",
    "region_contrast": "none (contrast of unsupervised colour regions of images)",
    "silhouette_contrast": "none (contrast of the silhouettes of unsupervised colour regions of images)",
}

#: Pseudo masks of generated data, by the data engine's backend (``slotlab generate``).
PSEUDO_MASKS = {
    "scenes": "the scenes generator's ground-truth class masks",
    "sd": "Stable Diffusion attention maps",
}
#: The prompts the engine wrote, by ``prompts.source``.
PROMPTS = {
    "blip2": "BLIP-2 captions",
    "labels": "ground-truth class labels",
    "captions": "the source dataset's captions",
    "template": "a template filled with the source's annotation statistics",
}


def _dataset(spec: str) -> str:
    try:
        return parse_spec(spec).name
    except DatasetError:
        return spec


def _run_config(model_dir: str | Path) -> dict | None:
    """The training config saved beside a model directory (``RUN/model`` -> ``RUN/config.yaml``)."""
    path = Path(model_dir).parent / RUN_CONFIG_FILE
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None


def _class_maps(spec: str | None) -> str:
    """The class maps of dataset ``spec`` (e.g. 'scenes class maps'), or any when it is unknown."""
    return f"{_dataset(spec)} class maps" if spec else "class maps"


def _segmenter(path: str) -> str:
    run = _run_config(path)
    return f"supervised segmenter on {_class_maps(((run or {}).get('data') or {}).get('train'))}"


def _ssl_method(path: str) -> str | None:
    """The method that trained the ssl network at ``path`` (a run's model or a shipped network)."""
    if not is_shipped(path):
        return (_run_config(path) or {}).get("method")
    try:
        return f"{provenance(path)['method']}, shipped with slotlab as {path}"
    except (ValueError, OSError, KeyError):  # a name this installation does not ship
        return None


def _features(encoder: dict) -> str:
    name = encoder.get("name", "patch")
    if encoder.get("tiny"):
        return f"none (a random tiny {name} twin)"
    if name not in ENCODER_FEATURES:
        raise ValueError(f"encoder {name!r}: its supervision is not described; add it to ENCODER_FEATURES")
    if encoder.get("semantic_model"):
        return f"colour + {_segmenter(encoder['semantic_model'])}"
    if name == "ssl" and encoder.get("path"):
        method = _ssl_method(encoder["path"])
        if method:
            return f"none (a CNN trained on images without labels by {method})"
    return ENCODER_FEATURES[name]


def _generated(spec: str) -> str:
    """The pseudo masks (and prompts) of a ``generated:ROOT`` dataset, from its run.json."""
    root = parse_spec(spec).root
    try:
        _, settings = RunLayout.read(root)
    except (OSError, ValueError, KeyError):  # missing, damaged or not a generated run
        return f"GLASS pseudo masks of the generated data in {root} (its run.json, which says how, is unreadable)"
    config = settings.get("config") or {}  # the GenerateConfig of the run (slotlab.datagen.run.run_settings)
    backend = config.get("backend")
    masks = PSEUDO_MASKS.get(backend, f"the {backend!r} backend")
    prompts = PROMPTS.get((config.get("prompts") or {}).get("source"))
    return f"GLASS pseudo masks from {masks}" + (f" (prompts: {prompts})" if prompts else "")


DESCRIPTIONS = "description tokens read off the generated scenes' ground truth (class, mean colour, box)"


def _reads_pseudo_masks(model: dict, stages: list[dict]) -> bool:
    """Does any stage weigh L_semantic, the only GLASS term that reads the pseudo masks, above
    zero? A stage's ``loss_weights`` override the model's lambda_semantic (the Table 6a rows
    without it set that lambda to 0; decoder pretraining sets the stage weight to 0)."""
    default = model.get("lambda_semantic", 1.0)  # absent: GLASS's default, which is not 0
    return any((stage.get("loss_weights") or {}).get("semantic", default) != 0 for stage in stages)


def _glass(model: dict, data: dict, stages: list[dict]) -> list[str]:
    spec = data.get("train") or ""
    if not _reads_pseudo_masks(model, stages):
        masks = "none of GLASS's pseudo masks (L_semantic's weight is 0)"
    elif _dataset(spec) == "generated":
        masks = _generated(spec)
    else:
        masks = f"GLASS pseudo masks from the ground-truth class maps of {_dataset(spec)}"
    parts = [f"training: {masks}"]
    if model.get("description"):
        parts.append(f"decoder: trained on {DESCRIPTIONS}")
    decoder = model.get("diffusion_decoder") or {}
    if decoder.get("pretrained_path"):
        parts.append("decoder: Stable Diffusion, pretrained on web image-text pairs")
    elif model.get("decoder_init"):
        init = _run_config(model["decoder_init"])
        if init is not None and (init.get("model") or {}).get("description"):
            parts.append(f"decoder: pretrained on {DESCRIPTIONS}")
        else:
            parts.append(f"decoder: initialised from {model['decoder_init']}")
    return parts


def describe_supervision(config: dict) -> str:
    """One line saying what the run of ``config`` (a saved training config, as a dict) saw
    besides images: its encoder's features, its training targets and a pretrained decoder."""
    method = config.get("method")
    model, data = config.get("model") or {}, config.get("data") or {}
    parts = [f"features: {_features(model['encoder'])}"] if model.get("encoder") else []
    if method == "glass":
        parts += _glass(model, data, config.get("stages") or [])
    elif method == "segmenter":
        parts.append(f"training: supervised on {_class_maps(data.get('train'))}")
    elif method == "spot" and model.get("teacher"):
        parts.append("training: none (reconstructs its encoder's features and distils a stage-1 SPOT teacher's masks)")
    elif method in METHOD_TRAINING:
        parts.append(f"training: {METHOD_TRAINING[method]}")
    else:
        raise ValueError(f"method {method!r}: its supervision is not described; add it to METHOD_TRAINING")
    return "; ".join(parts)
