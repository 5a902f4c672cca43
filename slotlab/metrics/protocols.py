"""The named evaluation protocols of SPOT, GLASS, MSF and slotlab's own scenes."""

from __future__ import annotations

from dataclasses import replace

from slotlab.metrics.protocol import Protocol

_SPOT = Protocol(
    name="spot",
    summary=(
        "SPOT / DINOSAUR with OCLF metrics: ground truth shorter side 320 (nearest) + centre crop 320, "
        "slot masks bilinear to 320 + argmax, ignore_mask pixels (COCO overlaps, VOC border as in OCLF) "
        "dropped, background not an object, FG-ARI of an image without foreground = 1"
    ),
    metrics=("mbo_i", "mbo_c", "miou_i", "fg_ari"),
    eval_size=320,
    geometry="shorter_side_crop",
    if_empty="one",
)
_GLASS = Protocol(
    name="glass",
    summary=(
        "GLASS: ground truth shorter side 256 (nearest) + centre crop 256, slot masks bilinear to 256 + "
        "argmax, OCLF metrics with the background counted as a ground-truth segment, SO/PO/GO"
    ),
    metrics=("miou_i", "mbo_i", "mbo_c", "fg_ari", "slot_binding"),
    eval_size=256,
    geometry="shorter_side_crop",
    ignore_background=False,
    if_empty="one",
)

#: The named protocols. See docs/metrics.md for the evidence behind each setting.
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        _SPOT,
        replace(
            _SPOT,
            name="spot-voc",
            summary=(
                "SPOT's code on PASCAL VOC: as 'spot' but ignore_mask pixels (the 255 border) are scored as "
                "background, as gkakogeorgiou/spot datasets.py does"
            ),
            ignored_pixels="background",
        ),
        replace(
            _SPOT,
            name="spot-movi",
            summary=(
                "SPOT on MOVi-C/E: as 'spot' but on the frames' full 128x128 grid (SPOT Supp. D; the authors' "
                "--val_mask_size 128): ground truth at 128 (nearest if the frames are larger), slot masks "
                "bilinear to 128 + argmax"
            ),
            eval_size=128,
        ),
        _GLASS,
        replace(
            _GLASS,
            name="glass-authors",
            summary=(
                "GLASS's released evaluation script exactly: geometry of 'glass', no ignore mask (overlapping "
                "instances: the later-drawn one; build COCO with crowd=drop so crowds are background), "
                "FG-ARI on instances, ARI on classes, mIoU/mBO/object recovery/CorLoc with background counted"
            ),
            metrics=("fg_ari", "ari_c", "miou_i", "miou_c_image", "mbo_i", "mbo_c", "object_recovery", "cor_loc"),
            ignored_pixels="labelled",
        ),
        Protocol(
            name="msf",
            summary=(
                "MSF: centre square crop resized to 256x256 (nearest), COCO panoptic with stuff merged into "
                "background, background counted in mBO/mIoU, ARI on all pixels and FG-ARI; images without "
                "foreground skipped for FG-ARI; ignore_mask pixels (panoptic void) stay in slot areas"
            ),
            metrics=("ari", "fg_ari", "mbo_i", "miou_i"),
            eval_size=256,
            geometry="square_crop_resize",
            ignore_background=False,
            ignored_pixels="unlabelled",
        ),
        Protocol(
            name="native",
            summary=(
                "slotlab's own: the sample's resolution without crop (built-in scenes), background not an "
                "object, NaN (skipped) where a metric is undefined"
            ),
            metrics=("ari", "fg_ari", "mbo_i", "miou_i", "mbo_c", "slot_binding"),
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The named protocol; raises with the valid names otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown evaluation protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}") from None
