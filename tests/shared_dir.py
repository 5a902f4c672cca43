"""Where the optional real weights and annotated samples live: ``$SLOTLAB_SHARED``, else a
``shared`` folder beside this checkout. They are not part of slotlab: tests that read them skip,
saying which file is absent."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("SLOTLAB_SHARED") or Path(__file__).resolve().parents[2] / "shared")
ASSETS = SHARED / "assets"
FIXTURES = SHARED / "fixtures"
PARITY = FIXTURES / "parity"
