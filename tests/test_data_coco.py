"""COCO instances and COCO panoptic readers, on tiny generated sets and the real samples."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from slotlab.data.coco import COCOInstances, COCOPanoptic
from slotlab.data.coco_masks import decode_segmentations, paint_instances
from slotlab.data.imageio import DatasetError
from tests.shared_dir import FIXTURES

# pycocotools' decoder (used by annToMask for the reference masks) predates NumPy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 24, 32


def _coco_api(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def _write_image(path: Path, h: int = H, w: int = W, fmt: str = "JPEG", mode: str = "RGB") -> None:
    array = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path, format=fmt)


def _annotation(ann_id: int, image_id: int, category: int, segmentation, crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": segmentation,
            "iscrowd": crowd, "bbox": [0, 0, 1, 1], "area": 1.0}


@pytest.fixture()
def coco_root(tmp_path: Path) -> Path:
    """A COCO-layout root: annotations/instances_val2017.json and val2017/*.jpg."""
    (tmp_path / "annotations").mkdir()
    images = tmp_path / "val2017"
    images.mkdir()
    blob = np.zeros((H, W), bool)
    blob[2:9, 20:30] = True
    crowd = np.zeros((H, W), bool)
    crowd[15:22, 1:12] = True
    records = [(1, "a.jpg"), (2, "empty.jpg"), (3, "repaired.jpg"), (4, "missing.jpg"), (5, "wrong_size.jpg"),
               (6, "truncated.jpg"), (7, "grey.jpg")]
    for _, name in records:
        if name == "missing.jpg":
            continue
        if name == "wrong_size.jpg":
            _write_image(images / name, h=H + 2)
        elif name == "grey.jpg":
            _write_image(images / name, mode="L")
        else:
            _write_image(images / name)
    data = (images / "truncated.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    annotations = [
        _annotation(10, 1, 1, _square(2, 2, 14, 12)),
        _annotation(11, 1, 5, _square(8, 6, 18, 16)),  # overlaps annotation 10
        _annotation(12, 1, 90, _compressed_rle(blob)),
        _annotation(13, 1, 1, _uncompressed_rle(crowd), crowd=1),
        _annotation(20, 3, 77, _square(1, 1, 5, 5)),  # unknown category
        _annotation(21, 3, 1, []),  # empty polygon list
        _annotation(22, 3, 5, _square(3, 3, 9, 9) + [[1, 2, 3, 4]]),  # one degenerate part
        _annotation(40, 4, 1, _square(1, 1, 5, 5)),
        _annotation(50, 5, 1, _square(1, 1, 5, 5)),
        _annotation(60, 6, 1, _square(1, 1, 5, 5)),
        _annotation(70, 7, 90, _square(4, 4, 10, 10)),
    ]
    categories = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]
    json_images = [{"id": i, "file_name": n, "height": H, "width": W} for i, n in records]
    (tmp_path / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": json_images, "annotations": annotations, "categories": categories})
    )
    captions = [{"id": 3, "image_id": 1, "caption": "second"}, {"id": 2, "image_id": 1, "caption": " first "}]
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps({"annotations": captions}))
    return tmp_path


def _index_of(dataset, image_id: int) -> int:
    return [r["id"] for r in dataset._images].index(image_id)


def test_classes_are_contiguous_in_category_id_order(coco_root):
    dataset = COCOInstances(coco_root)
    assert dataset.class_names == ["background", "person", "airplane", "toothbrush"]
    assert dataset.category_to_class == {1: 1, 5: 2, 90: 3}


def test_masks_equal_pycocotools_and_overlaps_are_ignored(coco_root):
    dataset = COCOInstances(coco_root)
    coco = _coco_api(coco_root / "annotations" / "instances_val2017.json")
    anns = coco.loadAnns(coco.getAnnIds(imgIds=1))
    reference = np.stack([coco.annToMask(a).astype(bool) for a in anns])
    assert np.array_equal(decode_segmentations([a["segmentation"] for a in anns], H, W), reference)
    sample = dataset[_index_of(dataset, 1)]
    expected = np.zeros((H, W), np.int64)
    for m, mask in enumerate(reference):
        expected[mask] = m + 1
    assert np.array_equal(sample.instance_mask.numpy(), expected)
    overlap = reference.sum(0) > 1
    assert overlap.any() and np.array_equal(sample.ignore_mask.numpy(), overlap)
    assert sample.class_ids.tolist() == [1, 2, 3, 1]
    assert sample.meta["crowd"] == [False, False, False, True]
    lookup = np.array([0, 1, 2, 3, 1])
    assert np.array_equal(sample.semantic_mask.numpy(), lookup[expected])
    assert sample.image.shape == (3, H, W)


def test_overlaps_can_be_kept(coco_root):
    sample = COCOInstances(coco_root, ignore_overlaps=False)[0]
    assert not sample.ignore_mask.any()


def test_crowd_policies(coco_root):
    coco = _coco_api(coco_root / "annotations" / "instances_val2017.json")
    crowd_pixels = coco.annToMask(coco.loadAnns(13)[0]).astype(bool)
    others = np.stack([coco.annToMask(a).astype(bool) for a in coco.loadAnns([10, 11, 12])]).any(0)
    ignored = COCOInstances(coco_root, crowd="ignore")[0]
    assert ignored.class_ids.tolist() == [1, 2, 3]
    assert ignored.ignore_mask.numpy()[crowd_pixels].all()
    assert (ignored.instance_mask.numpy()[crowd_pixels & ~others] == 0).all()
    dropped = COCOInstances(coco_root, crowd="drop")[0]
    assert dropped.class_ids.tolist() == [1, 2, 3]
    assert not dropped.ignore_mask.numpy()[crowd_pixels].any()
    with pytest.raises(DatasetError, match="crowd='everything'"):
        COCOInstances(coco_root, crowd="everything")


def test_images_without_annotations_keep_or_skip(coco_root):
    kept = COCOInstances(coco_root)
    assert len(kept) == 7
    empty = kept[_index_of(kept, 2)]
    assert empty.num_objects == 0 and empty.boxes.shape == (0, 4) and not empty.instance_mask.any()
    skipped = COCOInstances(coco_root, empty="skip")
    assert 2 not in [r["id"] for r in skipped._images] and len(skipped) == 6
    crowd_only = [_annotation(1, 1, 1, _uncompressed_rle(np.ones((H, W), bool)), crowd=1)]
    path = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "images": data["images"][:1], "annotations": crowd_only}))
    assert len(COCOInstances(coco_root, empty="skip")) == 1
    assert len(COCOInstances(coco_root, empty="skip", crowd="ignore")) == 0


def test_bad_annotations_are_dropped_with_one_line_each(coco_root, caplog):
    with caplog.at_level(logging.WARNING, logger="slotlab.data"):
        dataset = COCOInstances(coco_root)
    assert len(dataset.issues) == 3
    assert any("category ids" in i and "20" in i for i in dataset.issues)
    assert any("empty polygon" in i and "21" in i for i in dataset.issues)
    assert any("fewer than three points" in i and "22" in i for i in dataset.issues)
    assert all("instances_val2017.json" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)
    sample = dataset[_index_of(dataset, 3)]
    assert sample.meta["annotation_ids"] == [22] and sample.class_ids.tolist() == [2]
    assert sample.instance_mask.sum() > 0
    with pytest.raises(DatasetError, match="strict=True"):
        COCOInstances(coco_root, strict=True)


@pytest.mark.parametrize("image_id, reason", [(4, "file not found"), (5, "but instances_val2017.json says"),
                                              (6, "truncated")])
def test_bad_images_are_skipped_with_one_warning_and_replaced(coco_root, caplog, image_id, reason):
    dataset = COCOInstances(coco_root)
    index = _index_of(dataset, image_id)
    with caplog.at_level(logging.WARNING, logger="slotlab.data"):
        sample = dataset[index]
        dataset[index]
    assert sample.meta["replaces"] == index and sample.meta["image_id"] == 7  # next loadable image
    record = next(s for s in dataset.skipped if s.index == index)
    assert reason in record.reason.lower() and record.file == str(dataset.image_path(index))
    naming = [r for r in caplog.records if record.file in r.getMessage()]
    assert len(naming) == 1 and "\n" not in naming[0].getMessage()


def test_strict_raises_on_a_bad_image(coco_root):
    dataset = COCOInstances(coco_root, empty="skip", crowd="drop")
    dataset.strict = True
    with pytest.raises(DatasetError, match="missing.jpg"):
        dataset[_index_of(dataset, 4)]


def test_grayscale_image_loads_as_rgb(coco_root):
    dataset = COCOInstances(coco_root)
    sample = dataset[_index_of(dataset, 7)]
    assert sample.image.shape == (3, H, W) and torch.equal(sample.image[0], sample.image[2])
    assert sample.class_ids.tolist() == [3]


def test_captions_take_the_lowest_annotation_id(coco_root):
    dataset = COCOInstances(coco_root, captions="annotations/captions_val2017.json")
    assert dataset[_index_of(dataset, 1)].caption == "first"
    assert dataset[_index_of(dataset, 2)].caption == ""


def test_missing_annotation_file_is_a_clear_error(tmp_path):
    (tmp_path / "val2017").mkdir()
    with pytest.raises(DatasetError, match="annotations=PATH"):
        COCOInstances(tmp_path)


# ----------------------------------------------------------------------------- panoptic

PERSON, CAR, SKY = 1, 3, 100


def _encode_ids(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


@pytest.fixture()
def panoptic_root(tmp_path: Path) -> Path:
    (tmp_path / "annotations" / "panoptic_val2017").mkdir(parents=True)
    (tmp_path / "val2017").mkdir()
    ids = np.zeros((H, W), np.int64)
    ids[:8] = 70000  # sky (stuff); rows 8.. stay void except the objects below
    ids[10:20, 2:10] = 5  # person
    ids[10:20, 12:20] = 300  # car, crowd
    ids[10:12, 25:30] = 12345  # an id missing from segments_info
    Image.fromarray(_encode_ids(ids)).save(tmp_path / "annotations" / "panoptic_val2017" / "1.png")
    _write_image(tmp_path / "val2017" / "1.jpg")
    segments = [{"id": 70000, "category_id": SKY, "iscrowd": 0}, {"id": 5, "category_id": PERSON, "iscrowd": 0},
                {"id": 300, "category_id": CAR, "iscrowd": 1}]
    data = {
        "images": [{"id": 1, "file_name": "1.jpg", "height": H, "width": W}],
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": segments}],
        "categories": [{"id": PERSON, "name": "person", "isthing": 1}, {"id": CAR, "name": "car", "isthing": 1},
                       {"id": SKY, "name": "sky", "isthing": 0}],
    }
    (tmp_path / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    return tmp_path


def test_panoptic_things_are_instances_and_stuff_is_background(panoptic_root):
    dataset = COCOPanoptic(panoptic_root)
    assert dataset.class_names == ["background", "person", "car"]
    sample = dataset[0]
    instance = sample.instance_mask.numpy()
    assert (instance[:8] == 0).all()  # stuff
    assert (instance[10:20, 2:10] == 1).all() and (instance[10:20, 12:20] == 2).all()
    assert sample.class_ids.tolist() == [1, 2] and sample.meta["crowd"] == [False, True]
    assert set(np.unique(instance).tolist()) == {0, 1, 2}
    ignore = sample.ignore_mask.numpy()
    assert ignore[8:10].all() and ignore[10:12, 25:30].all() and not ignore[:8].any()  # void (default "ignore")
    assert any("12345" in issue for issue in dataset.issues)
    as_background = COCOPanoptic(panoptic_root, void="background")[0]
    assert not as_background.ignore_mask.any() and torch.equal(as_background.instance_mask, sample.instance_mask)


def test_panoptic_crowd_can_be_ignored(panoptic_root):
    sample = COCOPanoptic(panoptic_root, crowd="ignore")[0]
    ignore = sample.ignore_mask.numpy()
    assert ignore[8:10].all() and ignore[10:12, 25:30].all() and ignore[10:20, 12:20].all()
    assert not ignore[:8].any() and not ignore[10:20, 2:10].any()
    assert sample.class_ids.tolist() == [1]


def test_panoptic_png_of_the_wrong_size_is_skipped(panoptic_root):
    png = panoptic_root / "annotations" / "panoptic_val2017" / "1.png"
    Image.fromarray(np.zeros((H, W + 1, 3), np.uint8)).save(png)
    dataset = COCOPanoptic(panoptic_root)
    with pytest.raises(DatasetError, match="none of the 1 samples"):
        dataset[0]
    assert "1.png" in dataset.skipped[0].file and "label map is" in dataset.skipped[0].reason


# ----------------------------------------------------------------------------- real samples


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"real sample {path} is absent (shared fixtures are not part of the package)")
    return path


def test_real_coco_instances_match_pycocotools():
    root = _fixture("coco_instances_sample")
    dataset = COCOInstances(root, annotations="instances.json", images="images", strict=True)
    coco = _coco_api(root / "instances.json")
    assert len(dataset) == len(coco.imgs) == 6 and len(dataset.class_names) == 81
    total = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=sample.meta["image_id"]))
        info = coco.imgs[sample.meta["image_id"]]
        assert sample.image.shape == (3, info["height"], info["width"])
        reference = [coco.annToMask(a).astype(bool) for a in anns]
        decoded = decode_segmentations([a["segmentation"] for a in anns], info["height"], info["width"])
        assert all(np.array_equal(d, r) for d, r in zip(decoded, reference, strict=True))
        expected = np.zeros((info["height"], info["width"]), np.int64)
        for m, mask in enumerate(reference):
            expected[mask] = m + 1
        assert np.array_equal(sample.instance_mask.numpy(), expected)
        if reference:
            assert np.array_equal(sample.ignore_mask.numpy(), np.stack(reference).sum(0) > 1)
        assert sample.class_ids.tolist() == [dataset.category_to_class[a["category_id"]] for a in anns]
        total += len(anns)
    assert total == 36


def test_real_coco_panoptic_things_match_the_png():
    root = _fixture("coco_panoptic_sample")
    dataset = COCOPanoptic(root, annotations="panoptic.json", images="images", masks="panoptic", strict=True)
    data = json.loads((root / "panoptic.json").read_text())
    things = {c["id"] for c in data["categories"] if c["isthing"]}
    by_image = {a["image_id"]: a for a in data["annotations"]}
    for index in range(len(dataset)):
        sample = dataset[index]
        ann = by_image[sample.meta["image_id"]]
        rgb = np.asarray(Image.open(root / "panoptic" / ann["file_name"]), dtype=np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        thing_segments = [s for s in ann["segments_info"] if s["category_id"] in things]
        assert sample.num_objects == len(thing_segments)
        for m, segment in enumerate(thing_segments):
            assert np.array_equal(sample.instance_mask.numpy() == m + 1, ids == segment["id"])
        stuff = np.isin(ids, [s["id"] for s in ann["segments_info"] if s["category_id"] not in things])
        assert stuff.any() and (sample.instance_mask.numpy()[stuff] == 0).all()
        assert (sample.semantic_mask.numpy()[stuff] == 0).all()


def test_paint_instances_with_more_than_255_masks():
    masks = np.zeros((300, 4, 300), bool)
    for m in range(300):
        masks[m, :, m] = True
    masks[299, 0, 0] = True  # overlaps mask 0
    labels, overlap = paint_instances(masks)
    assert labels[1].tolist() == list(range(1, 301)) and labels[0, 0] == 300
    assert overlap.sum() == 1 and overlap[0, 0]


def _rewrite(coco_root: Path, edit) -> None:
    path = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_an_image_entry_without_height_takes_its_size_from_the_file(coco_root):
    _rewrite(coco_root, lambda data: data["images"][0].pop("height"))
    dataset = COCOInstances(coco_root)
    assert any("without height or width" in issue and "ids 1" in issue for issue in dataset.issues)
    sample = dataset[_index_of(dataset, 1)]
    assert sample.image.shape[-2:] == (H, W) and sample.meta["image_id"] == 1 and sample.num_objects == 4


def test_an_image_entry_without_a_file_name_is_named(coco_root):
    _rewrite(coco_root, lambda data: data["images"][2].pop("file_name"))
    with pytest.raises(DatasetError, match=r"images\[2\] has no file_name"):
        COCOInstances(coco_root)


def test_a_malformed_rle_is_dropped_naming_its_annotation(coco_root):
    bad = _annotation(14, 1, 1, {"size": [H, W], "counts": [H * W + 5]})  # runs past the image
    _rewrite(coco_root, lambda data: data["annotations"].append(bad))
    dataset = COCOInstances(coco_root)
    sample = dataset[_index_of(dataset, 1)]
    assert sample.meta["annotation_ids"] == [10, 11, 12, 13]  # the others decode as before
    assert any("dropped annotation 14" in issue and "does not decode" in issue for issue in dataset.issues)


def test_data_inspect_lists_a_malformed_rle_and_goes_on(coco_root, tmp_path):
    bad = _annotation(14, 1, 1, {"size": [H, W], "counts": [H * W + 5]})  # runs past the image
    _rewrite(coco_root, lambda data: data["annotations"].append(bad))
    result = subprocess.run([sys.executable, "-m", "slotlab.cli", "data", "inspect", f"coco:{coco_root}",
                             "--out", str(tmp_path / "inspect")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dropped annotation 14" in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_evaluation_reads_each_image_once_and_names_the_unreadable(coco_root):
    from slotlab.data.imageio import ReadableSamples, SkippedSample

    dataset = COCOInstances(coco_root)
    items = list(ReadableSamples(dataset))
    unreadable = {dataset._images[s.index]["id"]: s.reason for s in items if isinstance(s, SkippedSample)}
    assert sorted(unreadable) == [4, 5, 6] and "file not found" in unreadable[4]
    assert [s.meta["image_id"] for s in items if not isinstance(s, SkippedSample)] == [1, 2, 3, 7]
