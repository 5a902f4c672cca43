"""Low-level helpers every layer may use: Hungarian matching (``matching``), seeded
randomness (``random``), image/mask resizing and cropping (``resize``), training-time
schedules (``schedules``)."""
