"""MOVi (Kubric) video frames exported as PNG, one sample per frame.

MOVi is distributed as TFDS records; slotlab reads frames exported with Kubric's own
file naming (what ``kubric.write_image_dict`` writes for each rendered video)::

    ROOT/<split>/<video>/rgba_00000.png           frame t (RGBA or RGB)
    ROOT/<split>/<video>/segmentation_00000.png   palette/grey indices: 0 background, k = object k

(``split=""`` reads ``ROOT/<video>/...``.) Objects keep one id across the frames of a
video: ``meta["object_ids"]`` holds the Kubric index of instance m+1, so a frame's
instance masks can be matched across time. Every object has class 1 ("object");
``frame_stride`` keeps every n-th frame.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Unpack

from slotlab.data.imageio import BadSampleError, DatasetError, FileReading, ObjectFileDataset, require_dir
from slotlab.data.sample import Sample

_FRAME = re.compile(r"rgba_(\d+)\.png$")


class MOViFrames(ObjectFileDataset):
    """Frames of MOVi videos with their instance segmentation (see the module docstring)."""

    name = "movi"

    def __init__(
        self, root: str | Path, split: str = "validation", frame_stride: int = 1, **reading: Unpack[FileReading]
    ) -> None:
        super().__init__(**reading)
        if frame_stride < 1:
            raise DatasetError(f"frame_stride must be >= 1, got {frame_stride}")
        self.root = Path(root)
        self.split = split
        folder = require_dir(self.root / split, "MOVi split", "ROOT/<split>/<video>/rgba_00000.png is expected")
        self.frames: list[tuple[str, int, Path]] = []
        for video in sorted(p for p in folder.iterdir() if p.is_dir()):
            numbered = sorted((int(m.group(1)), p) for p in video.glob("rgba_*.png") if (m := _FRAME.search(p.name)))
            self.frames += [(video.name, t, p) for t, p in numbered[::frame_stride]]
        if not self.frames:
            raise DatasetError(f"no <video>/rgba_NNNNN.png frames under {folder}")

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> Sample:
        video, frame, path = self.frames[index]
        image = self.read_image(path)
        mask_path = path.with_name(path.name.replace("rgba_", "segmentation_", 1))
        if not mask_path.is_file():
            raise BadSampleError(mask_path, "file not found (every rgba_N.png needs its segmentation_N.png)")
        labels = self.read_label_map(mask_path, tuple(image.shape[-2:]))
        return self.objects_sample(image, labels, self.sample_meta(index, path, video=video, frame=frame))
