"""Parity cases for the second_order family: optax's L-BFGS and line searches (torch's LBFGS and
SparseAdam are records in tests/cases/optimizers.py: a closure, and sparse gradients)."""

from tests.harness import OptaxCase, grad_fn, loss


def _linesearch_args(params, grads):
    """optax's extra arguments for a line search: the value, the gradient and the objective."""
    del grads
    return dict(value=loss(params), grad=grad_fn(params), value_fn=loss)


# Each L-BFGS case compiles a search loop; the line-search options are covered in tests/test_second_order.py.
OPTAX_CASES = [
    OptaxCase("lbfgs", {}, steps=5, extra_args=_linesearch_args),
    OptaxCase("lbfgs", dict(learning_rate=0.05, memory_size=2, scale_init_precond=False, linesearch=None), steps=8),
]
TORCH_CASES: list = []  # LBFGS's and SparseAdam's rows are in their records
