"""Reproduction tooling: the disk cache, plotting helpers and the notebook runner (they know about files, the numerics do not)."""
