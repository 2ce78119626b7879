"""Adam with lazy moments for sparse gradients (torch.optim.SparseAdam's rule)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation

__all__ = ["ScaleBySparseAdamState", "scale_by_sparse_adam", "dense_and_present"]


class ScaleBySparseAdamState(NamedTuple):
    """State of :func:`scale_by_sparse_adam`."""

    count: jax.Array  # shape=(), int32: updates so far (torch's step), absent entries included
    mu: Any  # like params: first moment, torch's exp_avg
    nu: Any  # like params: second moment, torch's exp_avg_sq


def _is_sparse(x: Any) -> bool:
    return isinstance(x, jsparse.JAXSparse)


def dense_and_present(grad: Any, entries: str = "rows") -> tuple[jax.Array, jax.Array]:
    """A gradient leaf as a dense array and the mask of its present entries (broadcastable to it).

    For a ``jax.experimental.sparse.BCOO`` gradient the present entries are its
    stored indices, as torch uses a sparse gradient's indices: an entry stored
    with zero values is present, duplicates are summed (torch's ``coalesce``). A
    hybrid BCOO (``n_dense > 0``, like ``nn.Embedding(sparse=True)``'s gradient)
    stores whole rows. For a dense gradient, ``entries="rows"`` counts a slice
    along the first axis as present when any of its values is non-zero, and
    ``entries="elements"`` counts each non-zero element.
    """
    if isinstance(grad, jsparse.BCOO):
        if grad.n_batch:
            raise ValueError(f"sparse gradients with batch dimensions are not supported (n_batch={grad.n_batch}); "
                             "use a BCOO without batch dimensions, e.g. BCOO.fromdense(g, n_dense=g.ndim - 1).")
        n_sparse = grad.n_sparse
        present = jnp.zeros(grad.shape[:n_sparse], bool)
        index = tuple(grad.indices[:, k] for k in range(n_sparse))
        present = present.at[index].set(True, mode="drop")  # padding indices lie out of range
        return grad.todense(), present.reshape(present.shape + (1,) * (grad.ndim - n_sparse))
    if _is_sparse(grad):
        raise TypeError(f"sparse gradients must be BCOO, got {type(grad).__name__}; convert with .to_bcoo()")
    grad = jnp.asarray(grad)
    if entries == "elements" or grad.ndim == 0:
        return grad, grad != 0
    return grad, jnp.any(grad != 0, axis=tuple(range(1, grad.ndim)), keepdims=True)


def scale_by_sparse_adam(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, *,
                         entries: str = "rows") -> GradientTransformation:
    r"""Adam's direction with lazy moments: entries absent from the gradient keep their moments and do not move.

    For the present entries (see :func:`dense_and_present`)

    .. math::
        m \leftarrow m + (1-\beta_1)(g - m), \quad v \leftarrow v + (1-\beta_2)(g^2 - v), \quad
        u = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \cdot \frac{m}{\sqrt{v} + \epsilon},

    and :math:`u = 0` elsewhere, with :math:`t` the number of updates so far (every
    update counts, as torch's per-parameter ``step`` does). This is
    ``torch.optim.SparseAdam``'s rule (Kingma & Ba, 2015, https://arxiv.org/abs/1412.6980,
    restricted to the gradient's support), in torch's order of operations; chain
    it with ``scale_by_learning_rate`` (see :func:`gradtx.optim.chains.sparse_adam_chain`).

    Gradient leaves may be dense arrays or ``jax.experimental.sparse.BCOO`` (without batch
    dimensions); the updates are dense. Sparse leaves only pass through a chain that is
    not given ``params`` (its structure check sees a BCOO's data and indices as leaves).

    Args:
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: added to :math:`\sqrt{v}`.
      entries: for dense gradients, ``"rows"`` (a slice along the first axis is present when any
        value in it is non-zero, as for an embedding table) or ``"elements"``.
    """
    check_range("b1", b1, 0.0, 1.0, high_open=True, where="scale_by_sparse_adam")
    check_range("b2", b2, 0.0, 1.0, high_open=True, where="scale_by_sparse_adam")
    check_range("eps", eps, 0.0, low_open=True, where="scale_by_sparse_adam")
    if entries not in ("rows", "elements"):
        raise ValueError(f"scale_by_sparse_adam: entries must be 'rows' or 'elements', got {entries!r}")

    def init(params):
        return ScaleBySparseAdamState(count=gt.zero_count(), mu=gt.tree_zeros_like(params),
                                      nu=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        beta1, beta2, epsilon = value_at(b1, state.count), value_at(b2, state.count), value_at(eps, state.count)
        count = gt.safe_increment(state.count)
        step_factor = jnp.sqrt(1 - beta2**count) / (1 - beta1**count)

        def leaf(g, m, v):
            g, present = dense_and_present(g, entries)
            g = g.astype(m.dtype)
            m_new = m + (g - m) * (1 - beta1)
            v_new = v + (g * g - v) * (1 - beta2)
            direction = step_factor.astype(m.dtype) * (m_new / (jnp.sqrt(v_new) + epsilon))
            zero = jnp.zeros([], m.dtype)
            return (jnp.where(present, direction, zero).astype(m.dtype), jnp.where(present, m_new, m).astype(m.dtype),
                    jnp.where(present, v_new, v).astype(v.dtype))

        # Sparse leaves and None (absent) leaves are leaves here, whatever their pytree registration.
        leaves, treedef = jax.tree.flatten(updates, is_leaf=lambda x: x is None or _is_sparse(x))
        results = [None if g is None else leaf(g, m, v)
                   for g, m, v in zip(leaves, treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu))]
        unzip = lambda k: treedef.unflatten([None if r is None else r[k] for r in results])  # noqa: E731
        return unzip(0), ScaleBySparseAdamState(count=count, mu=unzip(1), nu=unzip(2))

    return GradientTransformation(init, update)
