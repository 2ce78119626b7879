"""GaLore, Sophia and PSGD Kron as chains of transforms, with ``optax.contrib``'s names, arguments and defaults."""


from typing import Any

import jax

from gradtx._base import GradientTransformation, ScalarOrSchedule, chain
from gradtx._transforms.decay import add_decayed_weights
from gradtx._transforms.galore import scale_by_galore
from gradtx._transforms.psgd import scale_by_kron
from gradtx._transforms.scaling import scale_by_learning_rate
from gradtx._transforms.sophia import scale_by_sophia

__all__ = ["galore", "kron", "sophia"]


def galore(learning_rate: ScalarOrSchedule, rank: int = 128, update_proj_gap: int = 200, scale: Any = 1.0,
           base_optimizer: GradientTransformation | None = None, weight_decay: Any = 0.0, mask: Any = None,
           weight_dimension_numbers: Any = None) -> GradientTransformation:
    """GaLore (Zhao et al., 2024, https://arxiv.org/abs/2403.03507), as ``optax.contrib.galore``.

    ``chain(scale_by_galore(rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers),
    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``: the decay is
    added in the full parameter space (give it here, not to the base optimizer, which sees
    projected shapes and no params). See :func:`gradtx.scale_by_galore`.

    Example::

        tx = gradtx.galore(1e-2, rank=16, weight_decay=1e-2)
        state = tx.init(params)
        updates, state = tx.update(grads, state, params)
    """
    return chain(
        scale_by_galore(rank=rank, update_proj_gap=update_proj_gap, scale=scale, base_optimizer=base_optimizer,
                        weight_dimension_numbers=weight_dimension_numbers),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def sophia(learning_rate: ScalarOrSchedule, b1: Any = 0.965, b2: Any = 0.99, eps: Any = 1e-8,
           weight_decay: Any = 1e-4, weight_decay_mask: Any = None, gamma: Any = 0.01,
           clip_threshold: Any | None = 1.0, update_interval: Any = 10,
           hessian_diagonal_fn: GradientTransformation | None = None, mu_dtype: Any = None,
           verbose: bool = False, print_win_rate_every_n_steps: Any = 0) -> GradientTransformation:
    """Sophia (Liu et al., 2023, https://arxiv.org/abs/2305.14342), as ``optax.contrib.sophia``.

    ``chain(scale_by_sophia(...), add_decayed_weights(weight_decay, weight_decay_mask),
    scale_by_learning_rate(learning_rate))``. The default Hessian estimator is
    Hutchinson's (:func:`gradtx.hutchinson_estimator_diag_hessian`, Rademacher probes
    from ``PRNGKey(0)``), which needs the loss: pass ``obj_fn=lambda p: loss(p, batch)``
    to ``update``, with ``params``.

    Example::

        tx = gradtx.sophia(1e-2)
        state = tx.init(params)
        updates, state = tx.update(grads, state, params, obj_fn=lambda p: loss(p, batch))
    """
    return chain(
        scale_by_sophia(b1=b1, b2=b2, eps=eps, gamma=gamma, clip_threshold=clip_threshold,
                        update_interval=update_interval, hessian_diagonal_fn=hessian_diagonal_fn,
                        mu_dtype=mu_dtype, verbose=verbose, print_win_rate_every_n_steps=print_win_rate_every_n_steps),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )


def _matrices(params: Any) -> Any:
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def kron(learning_rate: ScalarOrSchedule, b1: Any = 0.9, weight_decay: Any = 0.0, weight_decay_mask: Any = _matrices,
         preconditioner_update_probability: Any = None, max_size_triangular: int = 8192,
         min_ndim_triangular: int = 2, memory_save_mode: str | None = None,
         momentum_into_precondition_update: bool = True, precondition_lr: Any = 0.1,
         precondition_init_scale: float = 1.0, mu_dtype: Any = None, precondition_dtype: Any = "float32",
         balance_prob: Any = 0.01, key: Any = 0) -> GradientTransformation:
    """PSGD Kron (Li, 2015, https://arxiv.org/abs/1512.04202), pytorch-optimizer's ``Kron`` as a chain.

    ``chain(scale_by_kron(...), add_decayed_weights(weight_decay, weight_decay_mask),
    scale_by_learning_rate(learning_rate))``: the decay is added to the preconditioned
    direction of parameters of 2 or more dimensions (the default mask), as
    pytorch-optimizer's decoupled decay. See :func:`gradtx.scale_by_kron`.

    Example::

        tx = gradtx.kron(1e-3, key=0)
        state = tx.init(params)
        updates, state = tx.update(grads, state, params)
    """
    return chain(
        scale_by_kron(b1, preconditioner_update_probability, max_size_triangular, min_ndim_triangular,
                      memory_save_mode, momentum_into_precondition_update, precondition_lr, precondition_init_scale,
                      mu_dtype, precondition_dtype, balance_prob, key),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
