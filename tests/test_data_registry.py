"""Dataset specs: parsing, validation, transforms from keys; and `slotlab data inspect`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slotlab.cli import data as data_inspect
from slotlab.data.folder import ImageFolder
from slotlab.data.imageio import DatasetError
from slotlab.data.packed import PackedDataset, convert
from slotlab.data.registry import DATASETS, DatasetSpec, build_dataset, describe_datasets, parse_spec
from slotlab.data.sample_transforms import CenterCrop, Compose, RandomCrop, RandomHorizontalFlip, ShorterSideResize
from tests.shared_dir import FIXTURES


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "masks").mkdir(parents=True)
    for k, (h, w) in enumerate([(30, 40), (50, 36), (32, 32)]):
        Image.fromarray(np.full((h, w, 3), 40 * k, np.uint8)).save(folder / f"{k}.jpg")
        labels = np.zeros((h, w), np.uint8)
        labels[2:10, 2:10] = 1
        labels[12:20, 5:25] = 2 + k
        Image.fromarray(labels).save(folder / "masks" / f"{k}.png")
    (folder / "3.jpg").write_bytes(b"broken")
    return folder


def test_parse_spec_forms():
    assert parse_spec("coco:/data/coco?split=val2017&crowd=ignore") == DatasetSpec(
        "coco", "/data/coco", {"split": "val2017", "crowd": "ignore"}
    )
    assert parse_spec("scenes?split=val&size=500") == DatasetSpec("scenes", None, {"split": "val", "size": "500"})
    assert parse_spec("folder:/my photos/a%26b").root == "/my photos/a%26b"
    assert parse_spec("folder:/x?masks=/m%26n").options == {"masks": "/m&n"}
    text = "coco:/data/coco?split=val2017&annotations=a%26b.json"
    assert str(parse_spec(text)) == text and parse_spec(str(parse_spec(text))) == parse_spec(text)
    with pytest.raises(DatasetError, match="twice"):
        parse_spec("coco:/x?split=a&split=b")
    with pytest.raises(DatasetError, match="empty ROOT"):
        parse_spec("coco:?split=a")


def test_errors_list_the_valid_choices(photos):
    with pytest.raises(DatasetError, match="valid names: coco, coco-panoptic, voc"):
        build_dataset("imagenet:/x")
    with pytest.raises(DatasetError, match=r"unknown key\(s\) \['colour'\].*valid keys: masks, ignore_value"):
        build_dataset(f"folder:{photos}?colour=red")
    with pytest.raises(DatasetError, match="needs a root"):
        build_dataset("voc?split=val")
    with pytest.raises(DatasetError, match="must be true or false"):
        build_dataset(f"folder:{photos}?recursive=maybe")
    with pytest.raises(DatasetError, match="either crop= or random_crop="):
        build_dataset(f"folder:{photos}?crop=8&random_crop=8")


def test_keys_are_typed_and_transforms_built_in_order(photos):
    dataset = build_dataset(f"folder:{photos}?masks=masks&ignore_value=none&recursive=false"
                            "&resize=20&random_crop=16&flip=0.5")
    assert isinstance(dataset, ImageFolder) and dataset.ignore_value is None and dataset.mask_dir == photos / "masks"
    steps = dataset.transform.transforms
    assert [type(t) for t in steps] == [ShorterSideResize, RandomCrop, RandomHorizontalFlip]
    assert steps[0].size == 20 and steps[1].size == (16, 16) and steps[2].p == 0.5
    assert dataset[0].image.shape == (3, 16, 16)


def test_extra_transform_runs_after_the_spec_keys(photos):
    dataset = build_dataset(f"folder:{photos}?resize=24", transform=CenterCrop(12))
    assert isinstance(dataset.transform, Compose) and dataset[1].image.shape == (3, 12, 12)


def test_strict_is_passed_through(photos):
    with pytest.raises(DatasetError, match="3.jpg"):
        build_dataset(f"folder:{photos}", strict=True)[3]


def test_packed_spec(photos, tmp_path):
    convert(ImageFolder(photos, masks="masks"), tmp_path / "packed", progress=False)
    dataset = build_dataset(f"packed:{tmp_path / 'packed'}?crop=16")
    assert isinstance(dataset, PackedDataset) and len(dataset) == 3 and dataset[2].image.shape == (3, 16, 16)


def test_scenes_spec():
    pytest.importorskip("slotlab.data.scenes", reason="the procedural scenes module is not in this checkout")
    dataset = build_dataset("scenes?split=val&size=3&resolution=32&seed=1&crop=24")
    assert len(dataset) == 3 and dataset[0].image.shape == (3, 24, 24)
    assert dataset.config.resolution == 32  # attributes reach through the transform wrapper
    with pytest.raises(DatasetError, match="valid keys"):
        build_dataset("scenes?colour=red")


def test_shared_options_declared_once_are_spec_keys_of_every_dataset_that_takes_them(photos):
    from slotlab.data.registry import option_types

    for name in ("coco", "coco-panoptic", "voc", "clevrtex", "clevr-masks", "movi", "folder"):
        assert option_types(name)["max_pixels"] is int, name
        assert not {"transform", "strict"} & set(option_types(name)), name
    for name in ("coco", "coco-panoptic"):
        assert {"annotations", "images", "crowd", "empty"} <= set(option_types(name)), name
    assert "max_pixels" not in option_types("packed")  # read from tar shards, not through read_image
    with pytest.raises(DatasetError, match="max_pixels must be int"):
        build_dataset(f"folder:{photos}?max_pixels=many")
    dataset = build_dataset(f"folder:{photos}?max_pixels=1100", strict=True)
    assert dataset.max_pixels == 1100 and dataset[2].image.shape == (3, 32, 32)  # 1,024 pixels
    with pytest.raises(DatasetError, match="above max_pixels=1100"):
        dataset[0]  # 40 x 30 = 1,200 pixels


def test_describe_lists_every_dataset():
    text = describe_datasets()
    assert all(name in text for name in DATASETS) and "random_crop" in text


def test_real_fixture_specs():
    if not FIXTURES.is_dir():
        pytest.skip(f"real samples {FIXTURES} are absent (shared fixtures are not part of the package)")
    specs = {
        f"coco:{FIXTURES}/coco_instances_sample?annotations=instances.json&images=images&resize=64&crop=64": 6,
        f"coco-panoptic:{FIXTURES}/coco_panoptic_sample?annotations=panoptic.json&images=images&masks=panoptic": 2,
        f"voc:{FIXTURES}/voc_sample?split=all": 3,
        f"clevr-masks:{FIXTURES}/clevr_masks_sample": 2,
    }
    for spec, size in specs.items():
        dataset = build_dataset(spec, strict=True)
        assert len(dataset) == size and dataset[size - 1].image.shape[0] == 3


# ----------------------------------------------------------------------------- inspect


def _inspect(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_inspect.add_arguments(parser)
    return data_inspect.run(parser.parse_args(list(argv)))


def test_inspect_reports_statistics_bad_files_and_writes_overlays(photos, tmp_path, capsys):
    out = tmp_path / "report"
    assert _inspect(f"folder:{photos}?masks=masks", "--out", str(out), "--num", "2") == 0
    printed = capsys.readouterr().out
    assert "samples: 4" in printed and "loaded: 3" in printed and "3.jpg" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_histogram"] == {"object": 6}
    assert summary["objects_per_image"]["histogram"] == {"2": 3}
    assert summary["image_sizes"]["most_common"][0] == ["30x40", 1]
    assert [b["file"].endswith("3.jpg") for b in summary["bad_files"]] == [True]
    overlay = Image.open(out / "overlay_000.png")
    assert overlay.size == (3 * 40, 30)
    labels = np.tile(np.asarray(Image.open(photos / "masks" / "0.png")), (1, 2))  # instance | semantic panels
    colours = np.asarray(overlay)[:, 40:]
    assert (colours[labels == 0] == 0).all() and (colours[labels > 0].max(axis=-1) > 0).all()


def test_inspect_strict_fails_on_the_first_bad_file(photos, capsys):
    assert _inspect(f"folder:{photos}", "--strict") == 1
    assert "3.jpg" in capsys.readouterr().err
