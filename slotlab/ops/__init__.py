"""Low-level helpers every layer may use."""
