"""slotlab: object-centric learning with slots (GLASS, SPOT, MSF, DINOSAUR)."""

__version__ = "0.1.0"
