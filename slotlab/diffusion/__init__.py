"""Diffusion parts shared by the slot decoders and the data engine: Stable Diffusion loading
and tiny twins (``sd``)."""
