"""What the numbers of a report mean (its collapsible glossary), and the caveats a result
itself calls for (printed by the demo and shown in the method's section)."""

from __future__ import annotations

#: Definitions, keyed by the name a metrics row or a log uses. A key ending in "." covers
#: every flattened name under it (e.g. "counts.mbo_i").
GLOSSARY: dict[str, str] = {
    "mbo_i": "mean best overlap over ground-truth instances: for each object, the IoU of the slot mask that covers "
             "it best, averaged over objects and then images (background excluded under 'native').",
    "miou_i": "mean IoU over instances after a one-to-one Hungarian matching of slots to objects (an unmatched "
              "object scores 0).",
    "fg_ari": "adjusted Rand index over foreground pixels: 1 when slots split the objects exactly as the ground "
              "truth does, about 0 for a random split; blind to the background.",
    "ari": "adjusted Rand index over all pixels, background included.",
    "mbo_c": "mean best overlap over ground-truth classes (the semantic mask) instead of instances.",
    "miou_c_image": "per-image mIoU over classes, matched one-to-one.",
    "miou_c": "dataset-level class mIoU (GLASS Tab. 9): intersections and unions summed over the dataset.",
    "ari_c": "adjusted Rand index on the class map.",
    "object_recovery": "share of objects that one slot covers with IoU above 0.5 (GLASS evaluation).",
    "cor_loc": "share of images whose best slot box hits an object box with IoU above 0.5 (GLASS evaluation).",
    "protocol": "the evaluation recipe (resolution, ignored pixels, background): numbers are comparable only under "
                "the same protocol. 'native': masks at image resolution, background excluded from mBO/mIoU.",
    "supervision": "what the method's features and training saw besides images: e.g. an encoder that reads a "
                   "segmenter supervised on class maps, or training on generated images with pseudo masks.",
    "train_seconds": "wall time of training alone (data loading included, evaluation excluded).",
    "train_steps": "optimiser steps taken, summed over the preset's stages.",
    "train_precision": "what mixed precision resolved to on this machine (bf16 where the CPU computes it natively).",
    "seconds": "wall time of the method's whole demo job: data generation, training, evaluation and tasks.",
    "generate_seconds": "wall time of the data engine making the method's training images (GLASS).",
    "decoder_train_seconds": "wall time of pretraining the diffusion decoder GLASS starts from (glass-tiny-decoder).",
    "vqvae_train_seconds": "wall time of pretraining the VQ-VAE that guides SLATE / SlotDiffusion.",
    "preset": "the training preset (slotlab presets lists them).",
    "model": "where the trained weights are.",
    "images": "images scored.",
    "counts.": "how many images (or slots, classes) each metric averaged.",
    "skipped.": "images where the metric is undefined (e.g. no foreground object) and left out of the mean.",
    "settings.": "the protocol's settings, as used.",
    "blocks": "a baseline without learning: the image cut into K equal blocks. A method must beat it to have "
              "found objects rather than regions.",
    "segmenter": "a small per-pixel classifier trained on the scenes' ground-truth class maps; the encoder of the "
                 "-segmenter methods (not the CPU presets', which are label-free) appends its class probabilities, "
                 "standing in for the semantics a pretrained encoder brings.",
    "probe_class_accuracy": "top-1 accuracy of a linear probe reading an object's class from its matched slot "
                            "(slots matched to objects by mask IoU; GLASS Table 8 protocol).",
    "probe_skipped": "why the slot probes did not run for this method: they compare slots with encoder features "
                     "pooled under each object, which its decompose does not return.",
    "probe_centre_mse": "mean squared error of a linear probe reading the object's box centre (in [0, 1]) from its slot.",
    "probe_class_accuracy_majority_baseline": "accuracy of always answering the most frequent class: a probe near "
                                              "it read nothing from the slots.",
    "probe_centre_mse_mean_baseline": "error of always answering the mean centre.",
    "probe_mask_mass_on_object": "share of a matched slot's soft mask lying on its object; the rest of the slot "
                                 "vector averages other parts of the image.",
    "probe_object_features_class_accuracy": "the class probe on encoder features averaged under each object's true "
                                            "mask: what a perfect slot could offer. When it fails too, the encoder "
                                            "does not carry the class.",
    "probe_object_features_centre_mse": "the centre probe on encoder features under each object's true mask.",
    "probe_image_features_class_accuracy": "the class probe on encoder features averaged over the whole image; a "
                                           "slot must beat it to describe its own object rather than the image.",
    "probe_image_features_centre_mse": "the centre probe on encoder features averaged over the whole image.",
    "recon_psnr": "PSNR of images sampled back from their own slots against the images (dB, higher is closer).",
    "recon_ssim": "structural similarity of the same reconstructions (1 = identical).",
    "recon_object_visible": "share of each scene's largest object that a colour test finds in the reconstruction.",
    "removal_objects": "how many objects the removal rates count (those visible in the reconstruction).",
    "removal_success": "share of those objects gone once their slot is dropped before sampling.",
    "removal_control_other_slot": "share gone when another slot is dropped instead: removal means something only "
                                  "well above both controls.",
    "removal_control_reseed": "share gone when the reconstruction is drawn again with another seed.",
}

#: The caveat of a method whose removal test found no object to remove.
NOTHING_TO_REMOVE_NOTE = (
    "{method}: its reconstructions show none of the tested objects (recon_object_visible 0), so the removal rates are "
    "undefined (n/a). Its slots carry neither the place nor the class of their object with the CPU presets' encoder "
    "(docs/downstream.md, 'What the slots carry'), so a decoder that reads only the slots cannot redraw the objects. "
    "slotlab demo --preset glass=glass-tiny-compose trains a decoder that also reads the slot masks (not part of "
    "GLASS; about 20 minutes on 2 cores), whose reconstructions show objects that removing their slot removes."
)


def caveats(method: str, row: dict) -> list[str]:
    """Notes that ``row``'s own values call for (e.g. undefined removal rates, and why)."""
    return [NOTHING_TO_REMOVE_NOTE.format(method=method)] if row.get("removal_objects") == 0 else []


def entries_for(names) -> dict[str, str]:
    """The glossary entries covering ``names``, in glossary order."""
    wanted = {name if name in GLOSSARY else name.split(".", 1)[0] + "." for name in names}
    return {term: text for term, text in GLOSSARY.items() if term in wanted}
