"""Parity cases for the step_rules family (being written)."""

OPTAX_CASES: list = []
TORCH_CASES: list = []
