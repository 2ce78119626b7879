"""Parity cases for the second_order family: optax's L-BFGS and line searches (torch's LBFGS and
SparseAdam need closures or sparse gradients: see tests/test_second_order.py)."""

from tests.harness import OptaxCase, TorchCase, grad_fn, loss


def _linesearch_args(params, grads):
    """optax's extra arguments for a line search: the value, the gradient and the objective."""
    del grads
    return dict(value=loss(params), grad=grad_fn(params), value_fn=loss)


# Each L-BFGS case compiles a search loop; the line-search options are covered in tests/test_second_order.py.
OPTAX_CASES = [
    OptaxCase("lbfgs", {}, steps=5, extra_args=_linesearch_args),
    OptaxCase("lbfgs", dict(learning_rate=0.05, memory_size=2, scale_init_precond=False, linesearch=None), steps=8),
]
# LBFGS is a driver, not a chain (chain=None): the functional parity is in tests/test_second_order.py,
# these rows are for the facade suite (gradtx.optim.LBFGS). SparseAdam needs sparse gradients (ibid.).
TORCH_CASES = [
    TorchCase("LBFGS", dict(lr=0.5, max_iter=5, history_size=3), closure=True, steps=4, dtypes=("float64",)),
    TorchCase("LBFGS", dict(line_search_fn="strong_wolfe"), closure=True, steps=4, dtypes=("float64",)),
]
