"""Vector quantisation, MSF's multi-scale quantised fusion and a trainable VQ-VAE."""
