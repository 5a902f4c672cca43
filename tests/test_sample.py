import pytest
import torch

from slotlab.data.sample import IGNORE_INDEX, Sample, boxes_from_instance_mask, collate, one_hot_masks


def _sample(h=4, w=5, m=2):
    inst = torch.zeros(h, w, dtype=torch.long)
    inst[0:2, 0:2] = 1
    inst[3, 4] = 2
    return Sample(torch.rand(3, h, w), inst, (inst > 0).long() * 3, torch.zeros(h, w, dtype=torch.bool),
                  torch.tensor([3, 3][:m]), boxes_from_instance_mask(inst, m))


def test_boxes_match_a_per_object_loop():
    torch.manual_seed(0)
    inst = torch.randint(0, 5, (13, 17))
    inst[inst == 3] = 0  # object 3 absent
    boxes = boxes_from_instance_mask(inst, 5)
    for m in range(5):
        ys, xs = torch.nonzero(inst == m + 1, as_tuple=True)
        expected = (torch.zeros(4) if len(xs) == 0 else
                    torch.tensor([xs.min() / 17, ys.min() / 13, (xs.max() + 1) / 17, (ys.max() + 1) / 13]))
        torch.testing.assert_close(boxes[m], expected.float())
    assert boxes_from_instance_mask(inst, 0).shape == (0, 4)


def test_sample_validates_shapes():
    s = _sample()
    with pytest.raises(ValueError, match="instance_mask"):
        Sample(s.image, s.instance_mask[:2], s.semantic_mask, s.ignore_mask, s.class_ids, s.boxes)
    with pytest.raises(ValueError, match="boxes"):
        Sample(s.image, s.instance_mask, s.semantic_mask, s.ignore_mask, s.class_ids, s.boxes[:1])


def test_collate_and_one_hot():
    batch = collate([_sample(), _sample()])
    assert batch.image.shape == (2, 3, 4, 5) and len(batch.class_ids) == 2
    onehot = one_hot_masks(batch.instance_mask)
    assert onehot.shape == (2, 3, 4, 5)
    torch.testing.assert_close(onehot.sum(1), torch.ones(2, 4, 5))
    labels = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    assert one_hot_masks(labels)[0, :, 0, 2].sum() == 0  # ignored pixels get no channel
    with pytest.raises(ValueError, match="different sizes"):
        collate([_sample(), _sample(h=6)])
