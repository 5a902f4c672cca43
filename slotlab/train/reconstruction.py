"""Reconstruction quality of a generative slot model on a dataset split (GLASS Table 7)."""

from __future__ import annotations

from torch import Tensor

from slotlab.methods.base import ObjectCentricModel
from slotlab.methods.slot_edits import SamplingOptions, decoder_tokens, generate
from slotlab.ops.resize import resize_image


def reconstruct_split(
    model: ObjectCentricModel,
    dataset,
    options: SamplingOptions,
    num_images: int,
    batch_size: int = 16,
    lpips=None,
    fid_extractor=None,
    progress: bool = True,
) -> tuple[dict[str, float], Tensor, Tensor]:
    """GLASS Table 7 on the first ``num_images`` images of ``dataset``: each is decomposed and
    sampled back from its slots (batch i with seed ``options.seed + i``), and compared with the
    image resized to the decoder's resolution. FID runs on all ``num_images`` pairs. Returns
    the metrics and the first batch's (real, reconstruction) for pictures."""
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from slotlab.data.sample import collate
    from slotlab.metrics.generation import evaluate_reconstructions

    if num_images > len(dataset):
        raise ValueError(f"--num-images {num_images} but the dataset has {len(dataset)} images")
    loader = DataLoader(Subset(dataset, range(num_images)), batch_size=batch_size, collate_fn=collate)
    pairs: list[tuple[Tensor, Tensor]] = []
    for i, batch in enumerate(tqdm(loader, desc="reconstruct", unit="batch", disable=not progress)):
        slots = decoder_tokens(model, model.decompose(batch.image, seed=options.seed + i))
        recon = generate(model, slots, SamplingOptions(options.steps, options.guidance_scale, options.seed + i))
        pairs.append((resize_image(batch.image, tuple(recon.shape[-2:])), recon))
    metrics = evaluate_reconstructions([r for r, _ in pairs], [g for _, g in pairs], lpips=lpips,
                                       fid_extractor=fid_extractor, fid_num_images=num_images)
    return metrics, *pairs[0]
