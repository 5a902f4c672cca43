"""Slot decoders: the spatial-broadcast MLP decoder (DINOSAUR, GLASS, SPOT-MLP)."""

from slotlab.nn.decoders.mlp import MLPDecoder, MLPDecoderConfig, MLPDecoderOutput

__all__ = ["MLPDecoder", "MLPDecoderConfig", "MLPDecoderOutput"]
