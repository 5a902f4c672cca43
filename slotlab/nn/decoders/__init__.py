"""Slot decoders: what reconstructs the targets from the slots and yields per-slot masks."""
