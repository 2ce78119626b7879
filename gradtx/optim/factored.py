"""torch.optim.Adafactor and torch.optim.Muon as declarations over gradtx's transforms."""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp

from gradtx.base import GradientTransformation, chain, identity
from gradtx.transforms.decay import decoupled_weight_decay as decay_after_lr
from gradtx.transforms.factored import (
    clip_by_block_rms,
    decay_rate_pow,
    scale_by_factored_rms,
    scale_by_relative_step_size,
)
from gradtx.transforms.momentum import trace
from gradtx.transforms.muon import MuonDimensionNumbers, scale_by_newton_schulz, scale_by_shape
from gradtx.transforms.scaling import maximize as negate
from gradtx.transforms.scaling import scale, scale_by_learning_rate

__all__: list[str] = []

TORCH_MUON_EPS = 1e-7
TORCH_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def adafactor_chain(lr: Any = 1e-2, beta2_decay: Any = -0.8, eps: Any = (None, 1e-3), d: Any = 1.0,
                    weight_decay: Any = 0.0, maximize: bool = False,
                    use_weight_decay: bool | None = None) -> GradientTransformation:
    r"""torch.optim.Adafactor's step for one parameter group, as a chain.

    ``maximize -> factored RMS (last two axes, eps1 clamps) -> clip RMS at d ->
    -max(eps2, RMS(p)) * min(lr, 1/sqrt(t)) -> -lr*wd*p``. The last stage is torch's
    ``p.mul_(1 - lr*wd)`` before the step; the parameter RMS is that of the parameter
    before the decay, as in torch. The second-moment decay is :math:`1 - t^{\text{beta2\_decay}}`.
    ``eps=(None, eps2)`` clamps with each parameter dtype's machine epsilon.
    torch's state maps as ``step -> count``, ``row_var -> v_row`` (with the last axis
    kept, size 1), ``col_var -> v_col`` (with axis -2 kept), ``variance -> v``.
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    eps1, eps2 = eps
    return chain(
        negate() if maximize else identity(),
        scale_by_factored_rms(decay_rate=-beta2_decay, min_dim_size_to_factor=0, epsilon=0.0,
                              decay_rate_fn=functools.partial(decay_rate_pow, in_float32=False),
                              factored_axes=(-2, -1), clamp_eps="finfo" if eps1 is None else eps1),
        clip_by_block_rms(d),
        scale_by_relative_step_size(lr, eps2),
        decay_after_lr(weight_decay, lr) if use_weight_decay else identity(),
    )


def muon_chain(lr: Any = 1e-3, weight_decay: Any = 0.1, momentum: Any = 0.95, nesterov: bool = True,
               ns_coefficients: Any = TORCH_NS_COEFFICIENTS, eps: Any = TORCH_MUON_EPS, ns_steps: int = 5,
               adjust_lr_fn: str | None = None, use_weight_decay: bool | None = None) -> GradientTransformation:
    r"""torch.optim.Muon's step for one parameter group (2-D parameters only), as a chain.

    .. math::
        b_t = \mu b_{t-1} + (1-\mu) g_t, \quad
        u_t = (1-\mu) g_t + \mu b_t \ (\text{nesterov}) \text{ or } b_t, \quad
        p \leftarrow p - \eta\lambda p - \eta\, s\, \text{NS}_{bf16}(u_t)

    ``scale(1 - momentum) -> trace(momentum, nesterov)`` is torch's
    ``buf.lerp_(g, 1 - momentum)`` and ``g.lerp(buf, momentum)`` (the trace buffer is
    torch's ``momentum_buffer``); the Newton–Schulz iteration runs in bfloat16 with
    torch's roundings and ``max(norm, eps)``; :math:`s` is ``adjust_lr_fn``'s ratio
    (``None``/``"original"``: :math:`\sqrt{\max(1, A/B)}` for an ``A x B`` weight,
    ``"match_rms_adamw"``: :math:`0.2\sqrt{\max(A, B)}`); the decay
    :math:`\eta\lambda p` uses the unadjusted lr, as torch does.
    """
    if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    torch_layout = MuonDimensionNumbers(reduction_axis=1, output_axis=0)  # torch weights are (out, in)
    return chain(
        scale(1 - momentum),
        trace(momentum, nesterov),
        scale_by_newton_schulz(ns_coefficients, ns_steps, eps, compute_dtype=jnp.bfloat16, eps_mode="clamp"),
        scale_by_shape(None, 0.2) if adjust_lr_fn == "match_rms_adamw" else scale_by_shape(torch_layout),
        scale_by_learning_rate(lr),
        decay_after_lr(weight_decay, lr) if use_weight_decay else identity(),
    )
