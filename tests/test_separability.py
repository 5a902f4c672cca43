import torch

from slotlab.metrics.separability import ObjectSeparability


def test_separated_objects_score_better_than_mixed_ones():
    torch.manual_seed(0)
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, :, 4:] = 1
    separated = torch.cat([torch.full((1, 4, 8, 4), 1.0), torch.full((1, 4, 8, 4), -1.0)], dim=3)
    separated = separated + 0.05 * torch.randn(1, 4, 8, 8)
    mixed = torch.randn(1, 4, 8, 8)
    good, bad = ObjectSeparability(), ObjectSeparability()
    good.update(separated, mask)
    bad.update(mixed, mask)
    g, b = good.compute(), bad.compute()
    assert g["inter_cluster"] > b["inter_cluster"] and g["intra_cluster"] < b["intra_cluster"]
    assert abs(g["inter_cluster"] - 2.0) < 0.05  # two antipodal unit clusters
