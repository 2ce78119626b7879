"""Parity cases for the second_order family (being written)."""

OPTAX_CASES: list = []
TORCH_CASES: list = []
