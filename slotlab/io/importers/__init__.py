"""Importers of the authors' checkpoints: their key names -> slotlab's modules."""
