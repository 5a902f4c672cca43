"""``slotlab data inspect SPEC``: what a dataset holds, which files are bad, a few overlays.

Prints the number of samples, the class histogram, objects per image, image sizes and
the files that could not be loaded (each sample is read once with the skip policy off,
so every bad file is listed, not replaced), and writes overlay PNGs
(image | instance colours | semantic colours; ignored pixels white) plus
``summary.json`` into ``--out``.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from slotlab.data.imageio import BadSampleError, DatasetError, FileDataset
from slotlab.data.sample import Sample, class_names_of, dataset_name

_GOLDEN_RATIO = 0.618033988749895
_IGNORE_COLOR = (255, 255, 255)
_MOST_COMMON = 10


def label_colors(labels: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8: 0 black, k a distinct hue, ignored pixels white."""
    hues = (np.arange(int(labels.max(initial=0)) + 1) * _GOLDEN_RATIO) % 1.0
    palette = np.stack([_hsv_to_rgb(h) for h in hues]) if len(hues) else np.zeros((1, 3), np.uint8)
    palette[0] = 0
    colors = palette[labels]
    colors[ignore] = _IGNORE_COLOR
    return colors


def _hsv_to_rgb(hue: float) -> np.ndarray:
    pixel = Image.new("HSV", (1, 1), (int(hue * 255), 200, 255)).convert("RGB")
    return np.asarray(pixel, dtype=np.uint8)[0, 0]


def overlay(sample: Sample) -> Image.Image:
    """Image | instance colours | semantic colours, side by side."""
    image = (sample.image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    ignore = sample.ignore_mask.numpy()
    instances = label_colors(sample.instance_mask.numpy(), ignore)
    panels = [image, instances, label_colors(sample.semantic_mask.numpy(), ignore)]
    return Image.fromarray(np.concatenate(panels, axis=1))


def _read(dataset: Dataset, index: int, strict: bool) -> tuple[Sample | None, dict | None]:
    """Sample ``index`` without replacement, or the reason it failed."""
    if not isinstance(dataset, FileDataset):
        return dataset[index], None
    try:
        return dataset.load_transformed(index), None
    except BadSampleError as err:
        if strict:
            raise DatasetError(f"{dataset.name} sample {index}: {err}") from err
        return None, {"index": index, "file": err.file, "reason": err.reason}


def summarise(dataset: Dataset, max_samples: int | None = None, num_overlays: int = 0, strict: bool = False,
              progress: bool = True) -> tuple[dict, list[Image.Image]]:
    """Statistics of the first ``max_samples`` samples and the first ``num_overlays`` overlays."""
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    names = class_names_of(dataset)
    classes: Counter = Counter()
    objects: Counter = Counter()
    sizes: Counter = Counter()
    bad, overlays, unannotated = [], [], 0
    for index in tqdm(range(count), desc="scanning", disable=not progress, file=sys.stderr):
        sample, failure = _read(dataset, index, strict)
        if sample is None:
            bad.append(failure)
            continue
        unannotated += sample.meta.get("has_masks", True) is False
        classes.update(sample.class_ids.tolist())
        objects[sample.num_objects] += 1
        sizes[tuple(sample.image.shape[-2:])] += 1
        if len(overlays) < num_overlays:
            overlays.append(overlay(sample))
    loaded = count - len(bad)
    summary = {
        "dataset": dataset_name(dataset),
        "samples": len(dataset),
        "scanned": count,
        "loaded": loaded,
        "unannotated": unannotated,
        "class_histogram": {_class_name(names, k): n for k, n in sorted(classes.items())},
        "objects_per_image": {
            "histogram": dict(sorted(objects.items())),
            "mean": sum(k * n for k, n in objects.items()) / loaded if loaded else 0.0,
        },
        "image_sizes": {
            "most_common": [[f"{h}x{w}", n] for (h, w), n in sizes.most_common(_MOST_COMMON)],
            "min_hw": list(min(sizes)) if sizes else None,
            "max_hw": list(max(sizes)) if sizes else None,
        },
        "bad_files": bad,
        "issues": list(dataset.issues) if isinstance(dataset, FileDataset) else [],
    }
    return summary, overlays


def _class_name(names: list[str], class_id: int) -> str:
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)


def format_summary(summary: dict) -> str:
    objects = summary["objects_per_image"]
    lines = [
        f"dataset: {summary['dataset']}  samples: {summary['samples']}  scanned: {summary['scanned']}  "
        f"loaded: {summary['loaded']}  without ground truth: {summary['unannotated']}",
        f"objects per image: mean {objects['mean']:.2f}; "
        + ", ".join(f"{k}: {n}" for k, n in objects["histogram"].items()),
        "image sizes (HxW): " + ", ".join(f"{s} ({n})" for s, n in summary["image_sizes"]["most_common"]),
        "class histogram (objects):",
    ]
    lines += [f"  {name}: {n}" for name, n in summary["class_histogram"].items()]
    lines.append(f"repairs: {len(summary['issues'])}")
    lines += [f"  {issue}" for issue in summary["issues"]]
    lines.append(f"bad files: {len(summary['bad_files'])}")
    lines += [f"  sample {b['index']}: {b['file']}: {b['reason']}" for b in summary["bad_files"]]
    return "\n".join(lines)
