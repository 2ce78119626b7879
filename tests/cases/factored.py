"""Parity cases for the factored family (being written)."""

OPTAX_CASES: list = []
TORCH_CASES: list = []
