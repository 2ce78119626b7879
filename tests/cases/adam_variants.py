"""Parity cases for the adam_variants family (being written)."""

OPTAX_CASES: list = []
TORCH_CASES: list = []
