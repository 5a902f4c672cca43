"""Sample-level transforms move the image and every mask together and recompute boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slotlab.data.imageio import make_sample
from slotlab.data.sample import Sample, boxes_from_instance_mask
from slotlab.data.sample_transforms import (
    CenterCrop,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    ShorterSideResize,
    resize_center_crop,
)

H, W = 20, 30


def _sample() -> Sample:
    """Instances 1..3 with classes 4, 7, 9; the image's red channel encodes the instance id."""
    instance = np.zeros((H, W), np.int64)
    instance[2:8, 3:12] = 1
    instance[10:18, 5:9] = 2
    instance[4:16, 20:29] = 3
    image = torch.rand(3, H, W)
    image[0] = torch.from_numpy(instance).float() / 10
    ignore = np.zeros((H, W), bool)
    ignore[0, :] = True
    return make_sample(image, instance, [4, 7, 9], ignore_mask=ignore, meta={"index": 0})


def _assert_consistent(sample: Sample) -> None:
    """Red channel, instance mask, semantic mask and boxes still describe the same scene."""
    assert torch.equal((sample.image[0] * 10).round().long(), sample.instance_mask)
    lookup = torch.tensor([0, 4, 7, 9])
    assert torch.equal(sample.semantic_mask, lookup[sample.instance_mask])
    assert torch.equal(sample.boxes, boxes_from_instance_mask(sample.instance_mask, sample.num_objects))


def test_shorter_side_resize_keeps_aspect_and_labels():
    sample = _sample()
    out = ShorterSideResize(10)(sample)
    assert out.image.shape == (3, 10, 15) and out.instance_mask.shape == (10, 15)
    assert out.instance_mask.dtype == torch.int64 and out.ignore_mask.dtype == torch.bool
    assert set(out.instance_mask.unique().tolist()) <= {0, 1, 2, 3}  # nearest: no blended labels
    assert torch.equal(out.boxes, boxes_from_instance_mask(out.instance_mask, 3))
    assert out.boxes[2].tolist() == pytest.approx(sample.boxes[2].tolist(), abs=0.1)
    assert Resize((8, 8))(sample).image.shape == (3, 8, 8)


def test_center_crop_matches_slicing():
    sample = _sample()
    out = CenterCrop((10, 10))(sample)
    assert torch.equal(out.image, sample.image[:, 5:15, 10:20])
    assert torch.equal(out.instance_mask, sample.instance_mask[5:15, 10:20])
    assert torch.equal(out.ignore_mask, sample.ignore_mask[5:15, 10:20])
    _assert_consistent(out)
    with pytest.raises(ValueError, match="resize first"):
        CenterCrop(40)(sample)


def test_cropped_away_instance_keeps_its_id_with_a_zero_box():
    out = CenterCrop((10, 10))(_sample())
    assert out.num_objects == 3 and 2 not in out.instance_mask.unique().tolist()
    assert out.boxes[1].tolist() == [0, 0, 0, 0]


def test_random_crop_and_flip_are_reproducible_and_consistent():
    sample = _sample()
    transform = Compose([RandomCrop(12), RandomHorizontalFlip(0.5)])
    outs = [transform(sample, torch.Generator().manual_seed(s)) for s in (0, 0, 1, 2, 3, 4)]
    assert torch.equal(outs[0].image, outs[1].image) and torch.equal(outs[0].instance_mask, outs[1].instance_mask)
    assert len({tuple(o.image.flatten()[:50].tolist()) for o in outs}) > 2  # different seeds, different views
    for out in outs:
        assert out.image.shape == (3, 12, 12)
        _assert_consistent(out)


def test_flip():
    sample = _sample()
    flipped = RandomHorizontalFlip(1.0)(sample)
    assert torch.equal(flipped.instance_mask, sample.instance_mask.flip(-1))
    box = sample.boxes[0].tolist()
    assert flipped.boxes[0].tolist() == pytest.approx([1 - box[2], box[1], 1 - box[0], box[3]])
    twice = RandomHorizontalFlip(1.0)(flipped)
    assert torch.equal(twice.image, sample.image) and torch.equal(twice.boxes, sample.boxes)
    assert RandomHorizontalFlip(0.0)(sample) is sample
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)


def test_transforms_do_not_modify_their_input():
    sample = _sample()
    before = (sample.image.clone(), sample.instance_mask.clone(), sample.boxes.clone(), dict(sample.meta))
    out = resize_center_crop(12)(sample)
    out.meta["changed"] = True
    assert torch.equal(sample.image, before[0]) and torch.equal(sample.instance_mask, before[1])
    assert torch.equal(sample.boxes, before[2]) and sample.meta == before[3]
    assert out.image.shape == (3, 12, 12)


def test_global_generator_seeding_reproduces():
    transform = RandomCrop(8)
    torch.manual_seed(3)
    first = transform(_sample())
    torch.manual_seed(3)
    assert torch.equal(transform(_sample()).image, first.image)


def test_compose_refreshes_boxes_before_a_non_geometric_step():
    seen = []

    def record(sample: Sample, generator=None) -> Sample:
        seen.append(sample.boxes.clone())
        return sample

    out = Compose([ShorterSideResize(10), record, CenterCrop(8)])(_sample())
    assert torch.equal(seen[0], ShorterSideResize(10)(_sample()).boxes)
    assert torch.equal(out.boxes, boxes_from_instance_mask(out.instance_mask, 3))
