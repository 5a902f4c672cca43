"""Importers of the authors' checkpoints: their key names -> slotlab's modules, one module per
source (``glass``, ``spot``, ``msf``). The slot-attention and MLP-decoder mappings
``map_*(state_dict, authors_config, prefix)`` return an :class:`Imported` (slotlab config +
renamed state dict + :class:`ImportReport` of mapped / unused / missing keys);
``Imported.build()`` gives the loaded slotlab module."""

from slotlab.io.importers.base import Imported, ImportReport

__all__ = ["Imported", "ImportReport"]
