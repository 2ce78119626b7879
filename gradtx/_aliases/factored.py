"""Adafactor, SM3 and Muon as chains of transforms, with optax's names, arguments and defaults."""


from typing import Any

import jax
import jax.numpy as jnp

from gradtx._aliases.core import adamw
from gradtx._base import GradientTransformation, ScalarOrSchedule, chain, identity
from gradtx._transforms.decay import add_decayed_weights
from gradtx._transforms.factored import (
    clip_by_block_rms,
    scale_by_factored_rms,
    scale_by_param_block_rms,
    scale_by_sm3,
)
from gradtx._transforms.momentum import trace
from gradtx._transforms.muon import (
    DEFAULT_NS_COEFFS,
    MuonDimensionNumbers,
    resolve_ns_coeffs,
    scale_by_muon,
    scale_by_shape,
)
from gradtx._transforms.scaling import scale, scale_by_learning_rate
from gradtx._transforms.wrappers import MaskedNode, partition

__all__ = ["adafactor", "muon", "sm3"]


def adafactor(learning_rate: ScalarOrSchedule | None = None, min_dim_size_to_factor: int = 128,
              decay_rate: Any = 0.8, decay_offset: Any = 0, multiply_by_parameter_scale: bool = True,
              clipping_threshold: Any | None = 1.0, momentum: Any | None = None,
              dtype_momentum: Any = jnp.float32, weight_decay_rate: ScalarOrSchedule | None = None,
              eps: Any = 1e-30, factored: bool = True, weight_decay_mask: Any = None) -> GradientTransformation:
    r"""Adafactor (Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235), as ``optax.adafactor``.

    .. math::
        u_t = -\,\eta_t \cdot \max(\text{RMS}(p), 10^{-3}) \cdot
              \text{clip}_d\!\left(g_t / \sqrt{\hat V_t}\right) \;(+\ \text{momentum},\ \text{decay})

    ``chain(scale_by_factored_rms, clip_by_block_rms(clipping_threshold), scale_by_learning_rate(lr,
    flip_sign=False), scale_by_param_block_rms(), ema(momentum), add_decayed_weights, scale(-1))``;
    each optional stage is left out when its argument is ``None``/``False``. The momentum is an
    EMA without bias correction (``trace`` with ``dampening=momentum``) kept in ``dtype_momentum``.
    torch.optim.Adafactor's relative step size is :func:`gradtx.optim.chains.adafactor_chain`.

    Args:
      learning_rate: a global scale (a float, an array or a schedule); ``None``: none.
      min_dim_size_to_factor: factor a leaf only if two of its axes are at least this long.
      decay_rate: exponent of the second-moment decay :math:`1 - t^{-c}`.
      decay_offset: subtracted from the step count in that decay (for fine-tuning).
      multiply_by_parameter_scale: scale each leaf's step by its parameter's RMS.
      clipping_threshold: the RMS threshold :math:`d` of update clipping (``None``: no clipping).
      momentum: EMA decay of the updates (``None``: no momentum).
      dtype_momentum: dtype of the momentum buffer.
      weight_decay_rate: decoupled weight decay rate (``None``: none).
      eps: added to the squared gradient.
      factored: whether to factor the second moment at all.
      weight_decay_mask: which leaves the decay applies to (a tree of bools or a function).
    """
    return chain(
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps),
        clip_by_block_rms(clipping_threshold) if clipping_threshold is not None else identity(),
        scale_by_learning_rate(learning_rate, flip_sign=False) if learning_rate is not None else identity(),
        scale_by_param_block_rms() if multiply_by_parameter_scale else identity(),
        trace(momentum, accumulator_dtype=dtype_momentum, dampening=momentum) if momentum is not None else identity(),
        add_decayed_weights(weight_decay_rate, weight_decay_mask) if weight_decay_rate is not None else identity(),
        scale(-1),
    )


def sm3(learning_rate: Any, momentum: Any = 0.9) -> GradientTransformation:
    r"""SM3 (Anil et al., 2019, https://arxiv.org/abs/1901.11150), as ``optax.sm3``.

    .. math:: u_t = -\eta\, m_t \quad\text{with } m_t \text{ from } :func:`gradtx.scale_by_sm3`

    ``chain(scale_by_sm3(momentum), scale(-learning_rate))``: like optax, the learning
    rate must be a number or an array, not a schedule.
    """
    return chain(scale_by_sm3(momentum), scale(-learning_rate))


def muon(learning_rate: ScalarOrSchedule, ns_coeffs: Any = DEFAULT_NS_COEFFS, ns_steps: int = 5,
         beta: Any = 0.95, eps: Any = 1e-8, weight_decay: Any = 0.0, weight_decay_mask: Any = None,
         mu_dtype: Any = None, *, nesterov: bool = True, adaptive: bool = False,
         preconditioning: str = "frobenius", adam_b1: Any = 0.9, adam_b2: Any = 0.999,
         adam_eps_root: Any = 0.0, adam_weight_decay: Any = 0.0,
         adam_learning_rate: ScalarOrSchedule | None = None,
         muon_weight_dimension_numbers: Any = None, consistent_rms: Any = None) -> GradientTransformation:
    r"""Muon (Jordan et al., 2024, https://kellerjordan.github.io/posts/muon/), as ``optax.contrib.muon``.

    .. math::
        u_t = -\eta \left( s \cdot \text{NS}_k(\hat m_t) + \lambda\, p \right)

    where :math:`\hat m_t` is :func:`gradtx.scale_by_muon`'s (Nesterov, bias-corrected)
    momentum, :math:`\text{NS}_k` its Newton–Schulz orthogonalisation and :math:`s`
    :func:`gradtx.scale_by_shape`'s factor. Matrices (or the leaves that
    ``muon_weight_dimension_numbers`` names) get this step; every other leaf gets
    :func:`gradtx.adamw` with the ``adam_*`` arguments, as in optax (Liu et al., 2025,
    https://arxiv.org/abs/2502.16982, for ``consistent_rms``).

    Args:
      learning_rate: the step size (a float, an array or a schedule).
      ns_coeffs: ``(a, b, c)``, a sequence of such triples (one per step), or a preset
        name (``"standard"``, ``"dion"``).
      ns_steps: Newton–Schulz iterations.
      beta: momentum decay.
      eps: added to the norm before the first iteration, and Adam's eps.
      weight_decay: decay added to matrix updates before the learning rate.
      weight_decay_mask: which matrix leaves the decay applies to.
      mu_dtype: dtype of the momentum buffers.
      nesterov: Nesterov momentum (for Muon and for the Adam leaves).
      adaptive: scale each update by the dual norm :math:`\langle \hat m, \text{NS}(\hat m)\rangle`.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: AdamW's for the other leaves.
      adam_learning_rate: AdamW's learning rate (``None``: ``learning_rate``).
      muon_weight_dimension_numbers: a tree of :class:`gradtx.MuonDimensionNumbers`
        (``None`` where a leaf goes to Adam) or a function of the params returning one.
      consistent_rms: ``None`` for width scaling, or the target RMS of the update.
    """
    coeffs = resolve_ns_coeffs(ns_coeffs)
    labels = _muon_labels(muon_weight_dimension_numbers)
    dim_nums = _muon_dims(muon_weight_dimension_numbers, labels)
    return partition(
        {
            "muon": chain(
                scale_by_muon(coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov, adaptive=adaptive,
                              preconditioning=preconditioning, weight_dimension_numbers=dim_nums),
                scale_by_shape(dim_nums, consistent_rms),
                add_decayed_weights(weight_decay, weight_decay_mask),
                scale_by_learning_rate(learning_rate),
            ),
            "adam": adamw(learning_rate if adam_learning_rate is None else adam_learning_rate, adam_b1, adam_b2,
                          eps, adam_eps_root, mu_dtype, adam_weight_decay, nesterov=nesterov),
        },
        labels,
    )



def _is_dims_or_none(x: Any) -> bool:
    return x is None or isinstance(x, (MuonDimensionNumbers, MaskedNode))


def _muon_labels(spec: Any):
    """params -> a tree of "muon"/"adam": matrices (or the leaves ``spec`` names) go to Muon."""
    if spec is None:
        return lambda params: jax.tree.map(lambda x: "muon" if jnp.ndim(x) == 2 else "adam", params)

    def labels(params):
        dims = spec(params) if callable(spec) else spec
        return jax.tree.map(lambda d, sub: jax.tree.map(lambda _: "adam" if d is None else "muon", sub),
                            dims, params, is_leaf=_is_dims_or_none)

    return labels


def _muon_dims(spec: Any, labels: Any):
    """updates -> the dimension numbers of the Muon leaves, ``MaskedNode`` where Adam has them."""

    def dims_of(updates):
        dims = MuonDimensionNumbers() if spec is None else (spec(updates) if callable(spec) else spec)
        is_muon = jax.tree.map(lambda label: label == "muon", labels(updates))
        return jax.tree.map(lambda d, sub: jax.tree.map(lambda m: d if m else MaskedNode(), sub),
                            dims, is_muon, is_leaf=_is_dims_or_none)

    return dims_of
