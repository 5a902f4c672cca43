"""Method registry: name -> Method subclass (the contract: ``slotlab.methods.contract``)."""

from __future__ import annotations

from slotlab.methods.base import Method, ObjectCentricModel
from slotlab.methods.contract import Decomposition, MaskModel, SlotModel, Trainable


def _registry() -> dict[str, type[Method]]:
    from slotlab.methods.dinosaur import Dinosaur
    from slotlab.methods.glass import Glass
    from slotlab.methods.region_contrast import RegionContrast
    from slotlab.methods.segmenter import Segmenter
    from slotlab.methods.self_distillation import SelfDistillation
    from slotlab.methods.silhouette_contrast import SilhouetteContrast
    from slotlab.methods.slate import Slate
    from slotlab.methods.slotdiffusion import SlotDiffusion
    from slotlab.methods.spot import Spot
    from slotlab.methods.vqvae import VQVAEPretraining

    return {
        cls.method: cls
        for cls in (Dinosaur, Glass, RegionContrast, Segmenter, SelfDistillation, SilhouetteContrast, Slate, SlotDiffusion,
                    Spot, VQVAEPretraining)
    }


def method_names() -> list[str]:
    return sorted(_registry())


def get_method(name: str) -> type[Method]:
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(registry))}")
    return registry[name]


__all__ = ["Decomposition", "MaskModel", "Method", "ObjectCentricModel", "SlotModel", "Trainable", "get_method",
           "method_names"]
