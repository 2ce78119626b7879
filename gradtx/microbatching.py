"""Microbatching, as ``optax.microbatching``: run a function over a batch in slices and accumulate the results.

:func:`microbatch` is also at the top level (``gradtx.microbatch``), as in optax.
"""

# ruff: noqa: F401 - this module re-exports; each name below is public at gradtx.microbatching.<name>

from gradtx._microbatching import (
    AccumulationType, Accumulator, micro_grad, micro_vmap, microbatch, reshape_batch_axis,
)

__all__ = ["Accumulator", "AccumulationType", "microbatch", "micro_vmap", "micro_grad", "reshape_batch_axis"]
