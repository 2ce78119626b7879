"""Parity cases for the accumulators family (being written)."""

OPTAX_CASES: list = []
TORCH_CASES: list = []
