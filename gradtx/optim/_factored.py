"""torch.optim.Adafactor and torch.optim.Muon: chain builders and their facade declarations."""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import numpy as np

from gradtx import (
    GradientTransformation, MuonDimensionNumbers, chain, clip_by_block_rms, decay_rate_pow, identity, negate_if,
    scale, scale_by_factored_rms, scale_by_learning_rate, scale_by_newton_schulz, scale_by_relative_step_size,
    scale_by_shape, trace, decoupled_weight_decay as decay_after_lr,
)
from gradtx.optim._declare import check_tensor_lr
from gradtx.optim._optimizer import Optimizer, number

__all__ = ["Adafactor", "Muon"]

TORCH_MUON_EPS = 1e-7
TORCH_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# torch.optim.Muon's lr adjustments for an A x B weight: None/"original" sqrt(max(1, A/B)),
# "match_rms_adamw" 0.2 sqrt(max(A, B)), and torch 2.15's "spectral_unclamped" sqrt(A/B).
ADJUST_LR_FNS = (None, "original", "match_rms_adamw", "spectral_unclamped")


def adafactor_chain(lr: Any = 1e-2, beta2_decay: Any = -0.8, eps: Any = (None, 1e-3), d: Any = 1.0,
                    weight_decay: Any = 0.0, maximize: bool = False,
                    use_weight_decay: bool | None = None) -> GradientTransformation:
    r"""torch.optim.Adafactor's step for one parameter group, as a chain.

    ``maximize -> factored RMS (last two axes, eps1 clamps) -> clip RMS at d ->
    -max(eps2, RMS(p)) * min(lr, 1/sqrt(t)) -> -lr*wd*p``. The last stage is torch's
    ``p.mul_(1 - lr*wd)`` before the step; the parameter RMS is that of the parameter
    before the decay, as in torch. The second-moment decay is :math:`1 - t^{\text{beta2\_decay}}`.
    ``eps=(None, eps2)`` clamps with each parameter dtype's machine epsilon.
    torch's state maps as ``step -> count``, ``row_var -> v_row``, ``col_var -> v_col``,
    ``variance -> v``, with torch's shapes (``torch_layout``).
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    eps1, eps2 = eps
    return chain(
        negate_if(maximize),
        scale_by_factored_rms(decay_rate=-beta2_decay, min_dim_size_to_factor=0, epsilon=0.0,
                              decay_rate_fn=functools.partial(decay_rate_pow, in_float32=False),
                              factored_axes=(-2, -1), clamp_eps="finfo" if eps1 is None else eps1,
                              torch_layout=True),
        clip_by_block_rms(d),
        scale_by_relative_step_size(lr, eps2),
        decay_after_lr(weight_decay, lr) if use_weight_decay else identity(),
    )


def muon_chain(lr: Any = 1e-3, weight_decay: Any = 0.1, momentum: Any = 0.95, nesterov: bool = True,
               ns_coefficients: Any = TORCH_NS_COEFFICIENTS, eps: Any = TORCH_MUON_EPS, ns_steps: int = 5,
               adjust_lr_fn: str | None = None, use_weight_decay: bool | None = None) -> GradientTransformation:
    r"""torch.optim.Muon's step for one parameter group, as a chain: 2-D parameters, or stacks ``[..., A, B]``.

    .. math::
        b_t = \mu b_{t-1} + (1-\mu) g_t, \quad
        u_t = (1-\mu) g_t + \mu b_t \ (\text{nesterov}) \text{ or } b_t, \quad
        p \leftarrow p - \eta\lambda p - \eta\, s\, \text{NS}_{bf16}(u_t)

    ``scale(1 - momentum) -> trace(momentum, nesterov)`` is torch's
    ``buf.lerp_(g, 1 - momentum)`` and ``g.lerp(buf, momentum)`` (the trace buffer is
    torch's ``momentum_buffer``); the Newton–Schulz iteration runs in bfloat16 with
    torch's roundings and ``max(norm, eps)``; :math:`s` is ``adjust_lr_fn``'s ratio
    for an ``A x B`` weight (:data:`ADJUST_LR_FNS`); the decay :math:`\eta\lambda p`
    uses the unadjusted lr, as torch does. A parameter of rank > 2 is a stack of
    ``A x B`` matrices in its last two axes (one per head or expert): each is
    orthogonalised and scaled on its own, as the 2-D step would do to it alone.
    """
    if adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    # The last two axes form each matrix; torch's weights are (out, in). The iteration keeps the matrix as it
    # is (so 2-D parameters take exactly the 2-D path); the shape factor reads the (out, in) fans.
    as_is = MuonDimensionNumbers(reduction_axis=-2, output_axis=-1)
    torch_layout = MuonDimensionNumbers(reduction_axis=-1, output_axis=-2)
    shape_factor = {None: scale_by_shape(torch_layout), "original": scale_by_shape(torch_layout),
                    "match_rms_adamw": scale_by_shape(torch_layout, 0.2),
                    "spectral_unclamped": scale_by_shape(torch_layout, clamp=False)}[adjust_lr_fn]
    return chain(
        scale(1 - momentum),
        trace(momentum, nesterov),
        scale_by_newton_schulz(ns_coefficients, ns_steps, eps, weight_dimension_numbers=as_is,
                               compute_dtype=jnp.bfloat16, eps_mode="clamp"),
        shape_factor,
        scale_by_learning_rate(lr),
        decay_after_lr(weight_decay, lr) if use_weight_decay else identity(),
    )


def _is_complex(p: Any) -> bool:
    return jnp.iscomplexobj(getattr(p, "data", p))


class Adafactor(Optimizer):
    r"""torch.optim.Adafactor (Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235), torch 2.13's variant.

    .. math::
        \hat\beta_{2,t} = 1 - t^{c}, \quad
        R_t = \hat\beta_{2,t} R_{t-1} + (1-\hat\beta_{2,t})\,\text{mean}_j g_t^2, \quad
        C_t = \hat\beta_{2,t} C_{t-1} + (1-\hat\beta_{2,t})\,\text{mean}_i g_t^2, \\
        U_t = g_t \Big/ \sqrt{\max\!\big(R_t C_t / \max(\text{mean}_i R_t, \epsilon_1), \epsilon_1^2\big)}, \\
        \theta_t = \theta_{t-1}(1 - \gamma\lambda)
            - \frac{\max(\epsilon_2, \text{RMS}(\theta_{t-1}))\,\min(\gamma, 1/\sqrt{t})}{\max(1, \text{RMS}(U_t)/d)} U_t

    for parameters of rank 2 or more (factored over the last two axes); vectors and
    scalars keep a full second moment. The same numbers as torch 2.13's ``Adafactor``;
    the step is :func:`adafactor_chain`. ``opt.state[p]`` holds ``step`` and either
    ``row_var`` and ``col_var`` (shapes ``(..., R, 1)`` and ``(..., 1, C)``) or ``variance``.
    Complex parameters are rejected when they join (torch rejects them at the first step).

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: :math:`\gamma`, the cap on the relative step size (default 1e-2).
      beta2_decay: :math:`c`, the decay exponent (default -0.8).
      eps: :math:`(\epsilon_1, \epsilon_2)` (default ``(None, 1e-3)``; ``None``: the dtype's machine epsilon).
      d: :math:`d`, the update clipping threshold (default 1.0).
      weight_decay: :math:`\lambda`, decoupled decay (default 0).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
    """

    chain_builder = staticmethod(adafactor_chain)
    chain_options = ("lr", "beta2_decay", "eps", "d", "weight_decay", "maximize")
    switches = ('weight_decay',)
    state_names = {"row_var": "v_row", "col_var": "v_col", "variance": "v"}
    complex_as_real = False

    def __init__(self, params: Any, lr: Any = 1e-2, beta2_decay: float = -0.8, eps: tuple[float | None, float] = (None, 1e-3),
                 d: float = 1.0, weight_decay: float = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False) -> None:
        defaults = {"lr": lr, "beta2_decay": beta2_decay, "eps": tuple(eps), "d": d, "weight_decay": weight_decay,
                    "foreach": foreach, "maximize": maximize}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        lr, eps = group["lr"], group["eps"]
        check_tensor_lr(lr)
        if not 0.0 <= number(lr):
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 >= number(group["beta2_decay"]):
            raise ValueError(f"beta2_decay should be <= 0 but is: {group['beta2_decay']}")
        if eps[0] is not None and not 0.0 <= number(eps[0]):
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= number(eps[1]):
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= number(group["d"]):
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {group['d']}")
        if not 0.0 <= number(group["weight_decay"]):
            raise ValueError(f"weight_decay should be >= 0 but is: {group['weight_decay']}")
        if any(_is_complex(p) for p in group.get("params", ())):
            raise RuntimeError("Adafactor does not support complex parameters")


class Muon(Optimizer):
    r"""torch.optim.Muon (Jordan et al., 2024, https://kellerjordan.github.io/posts/muon/), for 2-D parameters.

    .. math::
        b_t = \mu b_{t-1} + (1-\mu) g_t, \quad
        u_t = (1-\mu) g_t + \mu b_t \ (\text{nesterov}) \text{ or } b_t, \\
        \theta_t = \theta_{t-1}(1 - \gamma\lambda) - \gamma\, s(A, B)\, \text{NS}_k(u_t)

    where :math:`\text{NS}_k` is ``ns_steps`` Newton–Schulz iterations with
    ``ns_coefficients``, computed in bfloat16 as torch does, and :math:`s` is
    ``adjust_lr_fn``'s ratio for an ``A x B`` parameter (``None``/``"original"``:
    :math:`\sqrt{\max(1, A/B)}`; ``"match_rms_adamw"``: :math:`0.2\sqrt{\max(A, B)}`;
    ``"spectral_unclamped"``, from torch 2.15: :math:`\sqrt{A/B}`).
    The same numbers as torch 2.13's ``Muon``; the step is :func:`muon_chain`.
    ``opt.state[p]`` holds ``momentum_buffer`` (torch keeps no step).

    With ``batched=True`` (gradtx's option) a parameter may also be a stack
    ``[..., A, B]`` of matrices, e.g. one per attention head or expert: each trailing
    matrix is orthogonalised, lr-adjusted and stepped exactly as the 2-D Muon would
    step it alone.

    Args:
      params: 2-D parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: :math:`\gamma` (default 1e-3).
      weight_decay: :math:`\lambda`, decoupled decay (default 0.1).
      momentum: :math:`\mu` (default 0.95).
      nesterov: Nesterov momentum (default True).
      ns_coefficients: the quintic's ``(a, b, c)`` (default (3.4445, -4.7750, 2.0315)).
      eps: the floor of the norm in the first normalisation (default 1e-7).
      ns_steps: Newton–Schulz iterations (default 5; fewer than 100).
      adjust_lr_fn: ``None``, ``"original"``, ``"match_rms_adamw"`` or ``"spectral_unclamped"``.
      batched: accept parameters of rank > 2 as stacks of matrices in their last two axes
        (default False: torch's 2-D check; like ``foreach``, kept out of the groups unless given).
      foreach: gradtx's tier choice (torch's Muon has none): ``True`` one program per
        group, ``False`` a per-parameter loop; when omitted the groups carry no
        ``foreach`` key, as torch's, and the step is fused.
    """

    chain_builder = staticmethod(muon_chain)
    chain_options = ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps",
                     "adjust_lr_fn")
    switches = ('weight_decay',)
    state_names = {"momentum_buffer": "trace"}
    step_name = None
    static_options = ("ns_steps",)
    complex_as_real = False

    def __init__(self, params: Any, lr: Any = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: tuple[float, float, float] = TORCH_NS_COEFFICIENTS,
                 eps: float = TORCH_MUON_EPS, ns_steps: int = 5, adjust_lr_fn: str | None = None, *,
                 batched: bool | None = None, foreach: bool | None = None) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                    "ns_coefficients": tuple(ns_coefficients), "eps": eps, "ns_steps": ns_steps,
                    "adjust_lr_fn": adjust_lr_fn}
        if foreach is not None:  # not one of torch's options: kept out of the groups unless given
            defaults["foreach"] = foreach
        if batched is not None:
            defaults["batched"] = batched
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        lr = group["lr"]
        check_tensor_lr(lr)
        if not 0.0 <= number(lr):
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 <= number(group["momentum"]):
            raise ValueError(f"momentum should be >= 0 but is: {group['momentum']}")
        if not 0.0 <= number(group["weight_decay"]):
            raise ValueError(f"weight decay should be >= 0 but is: {group['weight_decay']}")
        if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
            raise ValueError(f"Adjust learning rate function {group['adjust_lr_fn']} is not supported")
        if group["ns_steps"] >= 100:  # torch raises this at the first step
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        if len(group["ns_coefficients"]) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        batched = group.get("batched", False)
        for p in group.get("params", ()):
            ndim = np.ndim(getattr(p, "data", p))
            if ndim != 2 and not (batched and ndim > 2):
                shape = tuple(np.shape(getattr(p, "data", p)))
                raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: {shape}"
                                 + ("" if batched or ndim < 2 else
                                    "; for a stack of matrices [..., A, B] (per head or expert) pass batched=True"))
            if _is_complex(p):
                raise ValueError("Complex parameters are not supported")
