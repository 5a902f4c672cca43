"""COCO instances (``instances_*.json``, pycocotools) and COCO panoptic (JSON + PNGs).

Conventions (see docs/datasets.md):

- Classes: the categories of the JSON sorted by id get contiguous ids 1..K (1..80 for
  COCO things); 0 is background. ``dataset.class_names[k]`` and
  ``dataset.category_to_class`` expose the mapping.
- Instances: instance m+1 is the m-th kept annotation of the image in file order (the
  order pycocotools' ``getAnnIds`` returns). Where instances overlap the later one is
  written into ``instance_mask`` and, by default, the pixel is set in ``ignore_mask``
  (OCLF's ``ignore_overlaps``).
- Crowd annotations (``iscrowd=1``): ``crowd="instance"`` keeps them as ordinary
  instances, as the OCLF conversion does (it stores every annotation);
  ``crowd="ignore"`` puts their pixels into ``ignore_mask`` instead; ``crowd="drop"``
  discards them.
- Images without (kept) annotations: ``empty="keep"`` (default; the OCLF conversion keeps
  them and its metrics skip them) or ``empty="skip"`` (they are left out of the index).
- ``max_objects`` / ``min_box_area`` / ``filter_resolution``: MSF's image filter
  (:mod:`slotlab.data.object_filter`), on the JSON's ``bbox`` of each instance.
- Panoptic (the MSF convention): "thing" segments become instances, "stuff" segments
  become background; void pixels (id 0) go to ``ignore_mask`` (``void="ignore"``, the
  default, so that each evaluation protocol decides how to score them) or become
  background (``void="background"``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Literal, Unpack

import numpy as np

from slotlab.data.imageio import (
    BadSampleError,
    DatasetError,
    FileDataset,
    image_size,
    make_sample,
    require_dir,
    require_file,
    resolve_under,
)
from slotlab.data.coco_masks import decode_rles, paint_instances, segmentation_rle, valid_polygon
from slotlab.data.object_filter import FilteredReading, Measured, ObjectFilter, xywh_to_xyxy
from slotlab.data.sample import Sample

CrowdPolicy = Literal["instance", "ignore", "drop"]
EmptyPolicy = Literal["keep", "skip"]
VoidPolicy = Literal["background", "ignore"]

CROWD_POLICIES = ("instance", "ignore", "drop")
EMPTY_POLICIES = ("keep", "skip")
VOID_POLICIES = ("background", "ignore")

# How many offending annotation ids an issue line quotes.
_EXAMPLES = 5


def _check_choice(value: str, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        raise DatasetError(f"{option}={value!r} is not valid; choose one of {', '.join(choices)}")


def category_mapping(categories: list[dict]) -> tuple[list[str], dict[int, int]]:
    """Categories sorted by id -> (class names with 0 = "background", category id -> class id)."""
    ordered = sorted(categories, key=lambda c: c["id"])
    names = ["background"] + [c["name"] for c in ordered]
    return names, {c["id"]: k + 1 for k, c in enumerate(ordered)}


def _summarise(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:_EXAMPLES])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _EXAMPLES else "")


def _load_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); re-download or re-export it") from err
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{path} has no {key!r} list; is it a COCO annotation file?")
    return data


def _first_captions(path: Path) -> dict[int, str]:
    """image id -> its caption with the lowest annotation id (a deterministic choice)."""
    try:
        with open(path) as f:
            annotations = json.load(f)["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DatasetError(f"{path} is not a COCO captions file ({err!r}); pass captions=captions_SPLIT.json") from err
    chosen: dict[int, tuple[int, str]] = {}
    for ann in annotations:
        current = chosen.get(ann["image_id"])
        if current is None or ann["id"] < current[0]:
            chosen[ann["image_id"]] = (ann["id"], ann["caption"].strip())
    return {image_id: caption for image_id, (_, caption) in chosen.items()}


def image_records(images: list, annotation_file: Path, note_issue) -> list[dict]:
    """The id, file name and size of each entry of a COCO 'images' list. An entry without an
    id or file name is an error naming it; one without height or width is repaired (its size
    is read from the image file), with one issue line."""
    records, sizeless = [], []
    for number, im in enumerate(images):
        missing = [key for key in ("id", "file_name") if not isinstance(im, dict) or key not in im]
        if missing:
            raise DatasetError(f"{annotation_file}: images[{number}] has no {' or '.join(missing)}; every image entry "
                               "needs an id and a file_name")
        size = (im.get("height"), im.get("width"))
        if None in size:
            sizeless.append(im["id"])
            size = (None, None)
        records.append({"id": im["id"], "file_name": im["file_name"], "height": size[0], "width": size[1]})
    if sizeless:
        note_issue(f"{annotation_file}: image entries without height or width; their size is read from the image "
                   f"file (image ids {_summarise(sizeless)})")
    return records


class COCOOptions(FilteredReading, total=False):
    """The options both COCO layouts take besides ROOT and the split (dataset spec keys),
    with the reading and image-filter options; their defaults are :class:`_COCOFiles`'s.

    Keys:
        annotations: the annotation JSON (relative to ROOT or absolute).
        images: the image folder (likewise; default ROOT/split).
        crowd: what a crowd annotation becomes (``CROWD_POLICIES``).
        empty: keep or skip images without an object (``EMPTY_POLICIES``).
    """

    annotations: str | None
    images: str | None
    crowd: CrowdPolicy
    empty: EmptyPolicy


class _COCOFiles(FileDataset):
    """What both COCO layouts share: ROOT, the split, the crowd and empty-image policies, an
    annotation JSON (``annotations``, else ``default_annotations`` under ROOT), the image
    folder (``images``, else ROOT/split) and the image filter."""

    def __init__(
        self, root: str | Path, split: str, default_annotations: str, what: str, annotations: str | None = None,
        images: str | None = None, crowd: CrowdPolicy = "instance", empty: EmptyPolicy = "keep",
        **reading: Unpack[FilteredReading],
    ) -> None:
        self.object_filter = ObjectFilter.pop_from(reading)
        super().__init__(**reading)
        _check_choice(crowd, CROWD_POLICIES, "crowd")
        _check_choice(empty, EMPTY_POLICIES, "empty")
        self.root = Path(root)
        self.split = split
        self.crowd = crowd
        self.empty = empty
        self.annotation_file = require_file(resolve_under(self.root, annotations or default_annotations), what,
                                            "pass annotations=PATH (relative to ROOT or absolute)")
        self.image_dir = require_dir(resolve_under(self.root, images or split), "COCO image", "pass images=DIR")

    def _measure(self, record: dict, objects: list[dict], what: str) -> Measured:
        """The filter's view of an image: its objects' JSON boxes and its size (read from the
        file's header when the JSON lacks it; None when that fails, so the loader reports it)."""
        unboxed = [o["id"] for o in objects if not isinstance(o.get("bbox"), list) or len(o["bbox"]) != 4]
        if unboxed:
            raise DatasetError(f"{self.annotation_file}: {what} without a bbox [x, y, w, h] (ids {_summarise(unboxed)}) "
                               "but max_objects/min_box_area read the boxes; add them or leave the filter out")
        size = (record["height"], record["width"])
        if None in size:
            size = image_size(self.image_dir / record["file_name"])
        return None if size is None else (xywh_to_xyxy(o["bbox"] for o in objects), *size)


class COCOInstances(_COCOFiles):
    """COCO instance segmentation from ``instances_*.json``.

    Default layout (the official one): ``ROOT/annotations/instances_{split}.json`` and
    ``ROOT/{split}/*.jpg``; ``annotations``/``images`` override either path (relative
    paths are taken under ROOT). ``captions`` names a ``captions_*.json`` whose lowest-id
    caption per image becomes ``sample.caption``.
    """

    name = "coco"

    def __init__(
        self,
        root: str | Path,
        split: str = "val2017",
        ignore_overlaps: bool = True,
        captions: str | None = None,
        **options: Unpack[COCOOptions],
    ) -> None:
        super().__init__(root, split, f"annotations/instances_{split}.json", "COCO annotation", **options)
        self.ignore_overlaps = ignore_overlaps
        data = _load_json(self.annotation_file)
        self.class_names, self.category_to_class = category_mapping(data["categories"])
        self._captions = _first_captions(resolve_under(self.root, captions)) if captions else {}
        images = image_records(data["images"], self.annotation_file, self.note_issue)
        per_image = self._index_annotations(data, {im["id"] for im in images})
        self._images = sorted(images, key=lambda im: im["id"])
        if self.empty == "skip":
            self._images = [im for im in self._images if self._instances(per_image.get(im["id"], []))]
        self._images = self.object_filter.apply(
            self._images, lambda im: self._measure(im, self._instances(per_image.get(im["id"], [])), "annotations"),
            self.name)
        self._annotations = [per_image.get(im["id"], []) for im in self._images]

    def _instances(self, anns: list[dict]) -> list[dict]:
        """The annotations that become instances (a crowd one only with ``crowd="instance"``)."""
        return [a for a in anns if self.crowd == "instance" or not a["iscrowd"]]

    def _index_annotations(self, data: dict, image_ids: set[int]) -> dict[int, list[dict]]:
        """Kept annotations per image id (file order); one issue line per kind of repair."""
        problems: dict[str, list[int]] = defaultdict(list)
        per_image: dict[int, list[dict]] = defaultdict(list)
        for ann in data["annotations"]:
            kept = self._check_annotation(ann, image_ids, problems)
            if kept is not None:
                per_image[ann["image_id"]].append(kept)
        for problem, ids in problems.items():
            self.note_issue(f"{self.annotation_file}: {problem} (annotation ids {_summarise(ids)})")
        return per_image

    def _check_annotation(self, ann: dict, image_ids: set[int], problems: dict[str, list[int]]) -> dict | None:
        crowd = bool(ann.get("iscrowd", 0))
        if crowd and self.crowd == "drop":
            return None
        if ann["image_id"] not in image_ids:
            problems["dropped annotations of image ids absent from 'images'"].append(ann["id"])
            return None
        if ann["category_id"] not in self.category_to_class:
            problems["dropped annotations with category ids absent from 'categories'"].append(ann["id"])
            return None
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):
            valid = [p for p in segmentation if valid_polygon(p)]
            if not valid:
                problems["dropped annotations with an empty polygon list"].append(ann["id"])
                return None
            if len(valid) < len(segmentation):
                problems["dropped polygon parts with fewer than three points"].append(ann["id"])
        elif not (isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation):
            problems["dropped annotations without a polygon or RLE segmentation"].append(ann["id"])
            return None
        return {"id": ann["id"], "category_id": ann["category_id"], "iscrowd": crowd, "segmentation": segmentation,
                "bbox": ann.get("bbox")}

    def __len__(self) -> int:
        return len(self._images)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._images[index]["file_name"]

    def _decode(self, anns: list[dict], height: int, width: int) -> tuple[np.ndarray, list[dict]]:
        """Masks of the annotations that decode; a malformed polygon or RLE is dropped with an
        issue naming the annotation (each is decoded alone, so one bad RLE spoils no other)."""
        masks, kept = [], []
        for ann in anns:
            try:
                masks.append(decode_rles([segmentation_rle(ann["segmentation"], height, width)], height, width)[0])
            except Exception as err:  # pycocotools raises bare Exception (or ValueError, TypeError) on malformed input
                self.note_issue(f"{self.annotation_file}: dropped annotation {ann['id']}, whose segmentation does not "
                                f"decode ({err})")
                continue
            kept.append(ann)
        return (np.stack(masks) if masks else np.zeros((0, height, width), bool)), kept

    def load(self, index: int) -> Sample:
        record = self._images[index]
        path = self.image_path(index)
        image = self.read_image(path)
        height, width = image.shape[-2:]
        if record["height"] is not None and (record["height"], record["width"]) != (height, width):
            raise BadSampleError(
                path,
                f"image is {width}x{height} but {self.annotation_file.name} says "
                f"{record['width']}x{record['height']} (WxH)",
            )
        masks, anns = self._decode(self._annotations[index], height, width)
        is_crowd = np.array([a["iscrowd"] for a in anns], dtype=bool)
        crowd_region = np.zeros((height, width), bool)
        if self.crowd == "ignore" and is_crowd.any():
            crowd_region = masks[is_crowd].any(axis=0)
            masks, anns = masks[~is_crowd], [a for a, c in zip(anns, is_crowd, strict=True) if not c]
        instance_mask, overlap = paint_instances(masks)
        ignore = crowd_region | (overlap if self.ignore_overlaps else False)
        class_ids = [self.category_to_class[a["category_id"]] for a in anns]
        meta = self.sample_meta(index, path, image_id=record["id"], annotation_ids=[a["id"] for a in anns],
                                crowd=[a["iscrowd"] for a in anns])
        return make_sample(
            image, instance_mask, class_ids, ignore_mask=ignore, caption=self._captions.get(record["id"], ""), meta=meta
        )


class COCOPanoptic(_COCOFiles):
    """COCO panoptic segmentation: ``panoptic_*.json`` plus one PNG per image.

    Default layout (the official one): ``ROOT/annotations/panoptic_{split}.json``, PNGs in
    ``ROOT/annotations/panoptic_{split}/`` and images in ``ROOT/{split}/``; override with
    ``annotations``, ``masks`` and ``images``. Segment id of a pixel = R + 256 G + 256^2 B,
    joined with ``segments_info``. Class ids number the *thing* categories 1..K by id.
    """

    name = "coco-panoptic"

    def __init__(
        self,
        root: str | Path,
        split: str = "val2017",
        masks: str | None = None,
        void: VoidPolicy = "ignore",
        **options: Unpack[COCOOptions],
    ) -> None:
        _check_choice(void, VOID_POLICIES, "void")
        super().__init__(root, split, f"annotations/panoptic_{split}.json", "COCO panoptic annotation", **options)
        self.void = void
        self.mask_dir = require_dir(
            resolve_under(self.root, masks or f"annotations/panoptic_{split}"), "panoptic PNG", "pass masks=DIR"
        )
        data = _load_json(self.annotation_file)
        things = [c for c in data["categories"] if c.get("isthing", 1)]
        self.class_names, self.category_to_class = category_mapping(things)
        self._stuff_ids = {c["id"] for c in data["categories"] if not c.get("isthing", 1)}
        self._entries = self._index(data, self.empty)

    def _index(self, data: dict, empty: EmptyPolicy) -> list[dict]:
        by_image = {ann["image_id"]: ann for ann in data["annotations"]}
        images = image_records(data["images"], self.annotation_file, self.note_issue)
        missing = [im["id"] for im in images if im["id"] not in by_image]
        if missing:
            self.note_issue(
                f"{self.annotation_file}: left out images without a panoptic entry (ids {_summarise(missing)})"
            )
        unknown: list[int] = []
        entries = []
        for im in sorted(images, key=lambda im: im["id"]):
            ann = by_image.get(im["id"])
            if ann is None:
                continue
            segments = []
            for seg in ann["segments_info"]:
                if seg["category_id"] in self.category_to_class or seg["category_id"] in self._stuff_ids:
                    segments.append({**{k: seg.get(k, 0) for k in ("id", "category_id", "iscrowd")},
                                     "bbox": seg.get("bbox")})
                else:
                    unknown.append(seg["id"])
            if empty == "skip" and not any(self._is_instance(s) for s in segments):
                continue
            entries.append({**im, "png": ann["file_name"], "segments": segments})
        if unknown:
            self.note_issue(
                f"{self.annotation_file}: segments with category ids absent from 'categories' are treated as void "
                f"(segment ids {_summarise(unknown)})"
            )
        return self.object_filter.apply(
            entries, lambda e: self._measure(e, [s for s in e["segments"] if self._is_instance(s)], "segments"),
            self.name)

    def _is_instance(self, segment: dict) -> bool:
        if segment["category_id"] not in self.category_to_class:
            return False
        return not (segment["iscrowd"] and self.crowd != "instance")

    def __len__(self) -> int:
        return len(self._entries)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._entries[index]["file_name"]

    def load(self, index: int) -> Sample:
        entry = self._entries[index]
        path = self.image_path(index)
        image = self.read_image(path)
        size = tuple(image.shape[-2:])
        segment_ids = self.read_label_map(self.mask_dir / entry["png"], size)
        instances = [s for s in entry["segments"] if self._is_instance(s)]
        labelled = {s["id"] for s in entry["segments"]}
        # Lookup over the distinct ids of the PNG: instance label, and whether to ignore.
        values, inverse = np.unique(segment_ids, return_inverse=True)
        label_of = {s["id"]: m + 1 for m, s in enumerate(instances)}
        crowd_ignored = {s["id"] for s in entry["segments"] if s["iscrowd"] and self.crowd == "ignore"
                         and s["category_id"] in self.category_to_class}
        void = ~np.isin(values, list(labelled))
        unlisted = values[void & (values != 0)]
        if len(unlisted):
            self.note_issue(f"{self.mask_dir / entry['png']}: segment ids {unlisted.tolist()} not in segments_info, "
                            "treated as void")
        labels = np.array([label_of.get(int(v), 0) for v in values], dtype=np.int64)
        ignored = np.isin(values, list(crowd_ignored)) | (void if self.void == "ignore" else False)
        inverse = inverse.reshape(size)
        meta = self.sample_meta(index, path, image_id=entry["id"], segment_ids=[s["id"] for s in instances],
                                crowd=[bool(s["iscrowd"]) for s in instances])
        class_ids = [self.category_to_class[s["category_id"]] for s in instances]
        return make_sample(image, labels[inverse], class_ids, ignore_mask=ignored[inverse], meta=meta)
