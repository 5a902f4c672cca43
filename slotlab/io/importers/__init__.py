"""Maps from the authors' state dicts (their key names) to slotlab modules, one module per
source: ``glass``, ``spot``, ``msf``. Each ``map_*(state_dict, authors_config, prefix)`` returns an
:class:`Imported` (slotlab config + renamed state dict + :class:`ImportReport` of mapped /
unused / missing keys); ``Imported.build()`` gives the loaded slotlab module."""

from slotlab.io.importers.base import Imported, ImportReport

__all__ = ["Imported", "ImportReport"]
