"""Diffusion: Stable Diffusion parts (``sd``: the one loader and the one set of tiny twins,
used by the decoder and the data engine), the denoising objective (``objective``), sampling
(``sampling``), the slot-conditioned decoder (``config``, ``parts``, ``decoder``) and its
mask-biased cross-attention (``mask_attention``)."""
