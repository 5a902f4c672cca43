"""MSF A.2's image filter (max_objects / min_box_area / filter_resolution) on tiny COCO
panoptic, COCO instances and VOC trees. No image file is written: the filter must read
annotations only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slotlab.config import load_preset
from slotlab.data.coco import COCOInstances, COCOPanoptic
from slotlab.data.imageio import DatasetError
from slotlab.data.object_filter import ObjectFilter, boxes_in_square_view
from slotlab.data.registry import build_dataset, parse_spec
from slotlab.data.voc import VOC_BORDER, VOCSegmentation

PERSON, SKY = 1, 100
MSF = "max_objects=10&min_box_area=16"


def _boxes(count: int, w: float = 4, h: float = 4) -> list[list[float]]:
    """``count`` disjoint [x, y, w, h] boxes along rows of ten."""
    return [[10.0 * (i % 10), 10.0 * (i // 10), w, h] for i in range(count)]


def _panoptic(root: Path, images: dict[int, dict]) -> Path:
    """annotations/panoptic_val2017.json with one entry per image: {"things": [bbox...],
    "stuff": [bbox...], "crowd": [bbox...], "size": (H, W)}; folders exist, files do not."""
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    (root / "val2017").mkdir()
    records, annotations = [], []
    for image_id, spec in images.items():
        height, width = spec.get("size", (128, 128))
        records.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": height, "width": width})
        segments = [{"category_id": category, "iscrowd": crowd, "bbox": box}
                    for key, category, crowd in (("things", PERSON, 0), ("stuff", SKY, 0), ("crowd", PERSON, 1))
                    for box in spec.get(key, [])]
        for number, segment in enumerate(segments):
            segment["id"] = number + 1
        annotations.append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments})
    categories = [{"id": PERSON, "name": "person", "isthing": 1}, {"id": SKY, "name": "sky", "isthing": 0}]
    data = {"images": records, "annotations": annotations, "categories": categories}
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    return root


def _kept(dataset) -> list[str]:
    return [dataset.image_path(i).stem for i in range(len(dataset))]


def test_boxes_in_square_view_scale_clip_and_drop():
    # 200 x 400 (H x W) at side 100: resized to 100 x 200, centre crop starts at x = 50.
    boxes = np.array([[100, 0, 140, 20], [0, 0, 80, 20], [80, 10, 120, 30]], float)
    view = boxes_in_square_view(boxes, 200, 400, 100)
    np.testing.assert_allclose(view, [[0, 0, 20, 10], [0, 5, 10, 15]])  # the second box left the crop


def test_panoptic_count_and_area_boundaries(tmp_path):
    root = _panoptic(tmp_path, {
        1: {"things": _boxes(10), "stuff": [[0, 0, 1, 1]] * 3},  # exactly 10 things of exactly 16 px: kept
        2: {"things": _boxes(11)},  # 11 things: dropped
        3: {"things": _boxes(1) + [[50, 50, 3, 5]]},  # a 15 px thing: dropped
        4: {"things": _boxes(2, w=16, h=1)},  # 16 x 1 = 16 px: kept
        5: {},  # no object: kept
    })
    assert _kept(COCOPanoptic(root)) == ["1", "2", "3", "4", "5"]
    assert _kept(COCOPanoptic(root, max_objects=10, min_box_area=16)) == ["1", "4", "5"]
    assert _kept(COCOPanoptic(root, max_objects=10)) == ["1", "3", "4", "5"]
    assert _kept(COCOPanoptic(root, min_box_area=16)) == ["1", "2", "4", "5"]


def test_panoptic_crowd_counts_only_when_it_is_an_instance(tmp_path):
    root = _panoptic(tmp_path, {1: {"things": _boxes(10), "crowd": [[60, 60, 2, 2]]}, 2: {"things": _boxes(1)}})
    assert _kept(COCOPanoptic(root, max_objects=10)) == ["2"]  # crowd="instance": 11 objects
    assert _kept(COCOPanoptic(root, min_box_area=16)) == ["2"]  # and the crowd box is 4 px
    assert _kept(COCOPanoptic(root, max_objects=10, min_box_area=16, crowd="ignore")) == ["1", "2"]
    assert _kept(COCOPanoptic(root, max_objects=10, min_box_area=16, crowd="drop")) == ["1", "2"]


def test_filter_resolution_measures_in_the_resized_centre_crop(tmp_path):
    root = _panoptic(tmp_path, {
        1: {"size": (256, 256), "things": [[0, 0, 8, 8]]},  # 4 x 4 = 16 px at 128: kept
        2: {"size": (256, 256), "things": [[0, 0, 8, 7.9]]},  # 15.8 px at 128: dropped
        # 256 x 512: at 128 the centre crop holds x in [128, 384) of the original
        3: {"size": (256, 512), "things": _boxes(10, w=8, h=8) + [[130, 100, 8, 8]]},  # 10 of 11 left of it
        4: {"size": (256, 512), "things": [[130, 0, 8, 8]] * 10 + [[500, 0, 2, 2]]},  # the tiny one right of it
    })
    assert _kept(COCOPanoptic(root, max_objects=10, min_box_area=16)) == ["1", "2"]
    assert _kept(COCOPanoptic(root, max_objects=10, min_box_area=16, filter_resolution=128)) == ["1", "3", "4"]


def test_coco_instances_filter_reads_the_annotation_boxes(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    polygon = [[0, 0, 4, 0, 4, 4, 0, 4]]
    images, annotations = [], []
    for image_id, boxes in ((1, _boxes(10)), (2, _boxes(11)), (3, [[0, 0, 3.9, 4]])):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 128, "width": 128})
        for box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": PERSON,
                                "segmentation": polygon, "iscrowd": 0, "bbox": box, "area": 16.0})
    data = {"images": images, "annotations": annotations, "categories": [{"id": PERSON, "name": "person"}]}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    assert _kept(COCOInstances(tmp_path)) == ["1", "2", "3"]
    assert _kept(COCOInstances(tmp_path, max_objects=10, min_box_area=16)) == ["1"]
    assert _kept(build_dataset(f"coco:{tmp_path}?{MSF}")) == ["1"]


def _voc(root: Path, objects: dict[str, np.ndarray | None]) -> Path:
    for folder in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for name, labels in objects.items():
        if labels is not None:
            Image.fromarray(labels.astype(np.uint8)).save(root / "SegmentationObject" / f"{name}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(objects) + "\n")
    return root


def _voc_objects(count: int, w: int = 4, h: int = 4) -> np.ndarray:
    labels = np.zeros((40, 60), np.uint8)
    for i in range(count):
        top, left = 10 * (i // 6) + 1, 10 * (i % 6) + 1
        labels[top : top + h, left : left + w] = i + 1
        labels[top - 1, left : left + w] = VOC_BORDER  # the border is neither an object nor part of one
    return labels


def test_voc_filter_reads_the_object_pngs(tmp_path):
    small = _voc_objects(2)
    small[30:33, 50:55] = 9  # a 5 x 3 = 15 px object
    root = _voc(tmp_path, {"ten": _voc_objects(10), "eleven": _voc_objects(11), "small": small,
                           "flat": _voc_objects(1, w=16, h=1), "unannotated": None})
    assert _kept(VOCSegmentation(root, split="train", require_masks=False)) == [
        "ten", "eleven", "small", "flat", "unannotated"]
    filtered = VOCSegmentation(root, split="train", require_masks=False, max_objects=10, min_box_area=16)
    assert _kept(filtered) == ["ten", "flat", "unannotated"]  # an image without an object PNG is kept


@pytest.mark.parametrize(("option", "named"), [
    ("max_objects=0", "max_objects"), ("max_objects=-3", "max_objects"), ("min_box_area=0", "min_box_area"),
    ("min_box_area=-16", "min_box_area"), ("filter_resolution=0&max_objects=10", "filter_resolution"),
    ("filter_resolution=128", "filter_resolution"), ("max_objects=ten", "max_objects"),
    ("min_box_area=big", "min_box_area"),
])
def test_bad_values_are_errors_naming_the_option(tmp_path, option, named):
    root = _panoptic(tmp_path, {1: {"things": _boxes(1)}})
    with pytest.raises(DatasetError, match=named):
        build_dataset(f"coco-panoptic:{root}?{option}")


def test_a_segment_without_a_bbox_is_an_error_only_when_filtering(tmp_path):
    root = _panoptic(tmp_path, {1: {"things": _boxes(1)}})
    path = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(path.read_text())
    del data["annotations"][0]["segments_info"][0]["bbox"]
    path.write_text(json.dumps(data))
    assert len(COCOPanoptic(root)) == 1
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json.*bbox"):
        COCOPanoptic(root, max_objects=10)


def test_unset_filter_keeps_everything_and_is_inactive():
    assert not ObjectFilter().active
    assert ObjectFilter().apply([1, 2], lambda _: (np.zeros((99, 4)), 1, 1), "x") == [1, 2]


MSF_COCO_VOC_PRESETS = [f"{method}-{data}" for data in ("coco", "voc") for method in (
    "vqvae", "vqvae-c4", "vqvae-msf", "vqvae-msf-c4", "slate", "slate-msf", "slotdiffusion", "slotdiffusion-msf")]


@pytest.mark.parametrize("name", MSF_COCO_VOC_PRESETS)
def test_msf_presets_filter_train_and_val_as_msf_a2(name):
    data = load_preset(name)["data"]
    for split in ("train", "val"):
        options = parse_spec(data[split]).options
        assert (options["max_objects"], options["min_box_area"], options["filter_resolution"]) == ("10", "16", "128")


def test_a_filter_that_keeps_no_image_is_an_error_naming_the_options(tmp_path):
    root = _panoptic(tmp_path, {1: {"things": _boxes(11)}, 2: {"things": _boxes(12)}})
    with pytest.raises(DatasetError, match="keeps none of its 2 images; raise max_objects"):
        COCOPanoptic(root, max_objects=10)
