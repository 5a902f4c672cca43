"""slotlab: object-centric learning with slots (GLASS, DINOSAUR; the metric protocols of GLASS, SPOT and MSF)."""

__version__ = "0.1.0"
