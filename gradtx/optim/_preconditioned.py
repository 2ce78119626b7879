"""pytorch_optimizer's SOAP, MARS and LaProp as declarations over gradtx's transforms (4.1.0's numbers)."""

from __future__ import annotations

from typing import Any

import jax

from gradtx import (
    GradientTransformation, add_decayed_weights, chain, decay_after_step, decoupled_weight_decay, identity,
    multi_transform, negate_if, scale_by_adam_mini, scale_by_laprop, scale_by_learning_rate, scale_by_mars,
    scale_by_shampoo, scale_by_soap, scion,
)
from gradtx.optim._beyond import _GroupStep
from gradtx.optim._groups import ParamGroups, path_groups
from gradtx.optim._declare import check_betas, check_lr, check_non_negative, check_positive
from gradtx.optim._optimizer import Optimizer, number

__all__ = ["SOAP", "Shampoo", "MARS", "LaProp", "SCION", "AdamMini"]

_MAX_AXES = 8  # state names for the statistics of up to this many (merged) axes per parameter


def soap_chain(lr: Any = 3e-3, betas: Any = (0.95, 0.95), shampoo_beta: Any = None, weight_decay: Any = 1e-2,
               precondition_frequency: Any = 10, max_precondition_dim: int = 10000, merge_dims: bool = False,
               precondition_1d: bool = False, correct_bias: bool = True, normalize_gradient: bool = False,
               data_format: str = "channels_first", eps: Any = 1e-8, maximize: bool = False,
               use_weight_decay: bool | None = None, step: Any = None) -> GradientTransformation:
    """pytorch_optimizer.SOAP's step for one parameter, as a chain, at the group's ``step`` (1 at the first;
    None: the chain counts its own steps).

    ``maximize -> scale_by_soap -> -lr -> (p + u)(1 - lr*wd)``; the decay, as the reference's
    ``apply_weight_decay`` after ``p.add_``, multiplies the updated parameter and skips the group's first
    (statistics-only) step. State: ``exp_avg``, ``exp_avg_sq`` as ``mu``, ``nu``; the reference's
    lists ``GG`` and ``Q`` as one entry per rotated axis, ``GG.<axis>`` and ``Q.<axis>``.
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    b1, b2 = betas
    before = None if step is None else step - 1
    return chain(
        negate_if(maximize),
        scale_by_soap(b1, b2, shampoo_beta, eps, precondition_frequency, max_precondition_dim, merge_dims,
                      precondition_1d, correct_bias, normalize_gradient, data_format, step=before),
        scale_by_learning_rate(lr),
        decay_after_step(weight_decay, lr, skip_first=True, step=before) if use_weight_decay else identity(),
    )


def _axis_names(field: str) -> dict[str, str]:
    return {f"{field}.{axis}": f"{field}.{axis}" for axis in range(_MAX_AXES)}


class SOAP(_GroupStep):
    r"""pytorch_optimizer.SOAP: Adam in the eigenbasis of Shampoo's preconditioner.

    Vyas et al., 2024, *SOAP: Improving and Stabilizing Shampoo using Adam*, https://arxiv.org/abs/2409.11321.

    .. math::
        L_i \leftarrow \beta_s L_i + (1-\beta_s) G_{(i)} G_{(i)}^T, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2)(Q^T g_t)^2, \\
        \theta_t = \Big(\theta_{t-1} - \gamma \tfrac{\sqrt{1-\beta_2^{t-1}}}{1-\beta_1^{t-1}}
            Q \tfrac{Q^T m_t}{\sqrt{v_t}+\epsilon}\Big)(1 - \gamma\lambda)

    The numbers of ``pytorch_optimizer.SOAP`` (4.1.0); the step is :func:`soap_chain` (direction
    :func:`gradtx.scale_by_soap`). The first step only gathers the statistics :math:`L_i` and
    eigendecomposes them; every ``precondition_frequency`` steps the bases are refreshed by a power
    iteration and a QR decomposition (computed in float32 for every dtype, as the reference does).

    As the reference's, each param group holds the step count ``step``: only the group's first step is
    statistics-only, and a parameter whose first gradient comes later gathers its statistics and steps at once.
    Differences from the reference: ``GG`` and ``Q`` are one state entry per rotated axis (``"GG.0"``,
    ``"Q.0"``, ...) instead of lists (a state dict the reference saved loads: :meth:`from_reference_entry`);
    ``maximize``, ``data_format`` and ``foreach`` are param-group options;
    1-D parameters are never merged (the reference's reshape fails for them); a negative learning rate raises
    ``ValueError`` (the reference's own ``NegativeLRError``).

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 3e-3).
      betas: :math:`(\beta_1, \beta_2)` (default (0.95, 0.95)).
      shampoo_beta: :math:`\beta_s`; ``None`` uses :math:`\beta_2`.
      weight_decay: :math:`\lambda`, decoupled, applied after the step (default 1e-2).
      precondition_frequency: steps between eigenbasis refreshes (default 10).
      max_precondition_dim: longest axis given a preconditioner (default 10000).
      merge_dims: merge neighbouring small axes before preconditioning.
      precondition_1d: precondition 1-D parameters too.
      correct_bias: Adam's bias corrections.
      normalize_gradient: divide the direction by its RMS.
      data_format: ``'channels_first'`` or ``'channels_last'`` (NHWC 4-D parameters, with ``merge_dims``).
      eps: added to the denominator (default 1e-8).
      maximize: maximize the objective instead of minimizing it.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
    """

    chain_builder = staticmethod(soap_chain)
    chain_options = ("lr", "betas", "shampoo_beta", "weight_decay", "precondition_frequency", "max_precondition_dim",
                     "merge_dims", "precondition_1d", "correct_bias", "normalize_gradient", "data_format", "eps",
                     "maximize")
    group_options = ("step",)
    switches = ('weight_decay',)
    state_names = {"exp_avg": "mu", "exp_avg_sq": "nu", **_axis_names("GG"), **_axis_names("Q")}
    static_options = ("max_precondition_dim",)

    def __init__(self, params: Any, lr: Any = 3e-3, betas: tuple[Any, Any] = (0.95, 0.95),
                 shampoo_beta: float | None = None, weight_decay: float = 1e-2, precondition_frequency: int = 10,
                 max_precondition_dim: int = 10000, merge_dims: bool = False, precondition_1d: bool = False,
                 correct_bias: bool = True, normalize_gradient: bool = False, data_format: str = "channels_first",
                 eps: float = 1e-8, maximize: bool = False, foreach: bool | None = None) -> None:
        defaults = {"lr": lr, "betas": betas, "shampoo_beta": shampoo_beta, "weight_decay": weight_decay,
                    "precondition_frequency": precondition_frequency, "max_precondition_dim": max_precondition_dim,
                    "merge_dims": merge_dims, "precondition_1d": precondition_1d, "correct_bias": correct_bias,
                    "normalize_gradient": normalize_gradient, "eps": eps, "data_format": data_format,
                    "maximize": maximize, "foreach": foreach}
        super().__init__(params, defaults)

    @staticmethod
    def from_reference_entry(entry: Any) -> dict[str, Any]:
        """A parameter's state as pytorch_optimizer.SOAP saves it, in this class's names: its lists ``GG`` and
        ``Q`` (``[]`` for an axis without a preconditioner) as ``GG.<axis>`` and ``Q.<axis>``, without the
        options it copies into every parameter's state (``precondition_frequency``, ``shampoo_beta``)."""
        out = {}
        for key, value in entry.items():
            if key in ("GG", "Q") and isinstance(value, (list, tuple)):
                out.update({f"{key}.{axis}": m for axis, m in enumerate(value) if not isinstance(m, (list, tuple))})
            elif key not in ("precondition_frequency", "shampoo_beta"):
                out[key] = value
        return out

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_betas(group)
        check_non_negative(group, "shampoo_beta", "weight_decay")
        check_positive(group, "precondition_frequency", "max_precondition_dim")
        check_non_negative(group, "eps")


def _decay(weight_decay: Any, lr: Any, weight_decouple: bool, fixed_decay: bool, after: bool) -> Any:
    """pytorch_optimizer's ``apply_weight_decay`` as a last stage (coupled decay is handled by the caller)."""
    rate = 1.0 if fixed_decay else lr
    if not weight_decouple:
        return identity()
    return decay_after_step(weight_decay, rate) if after else decoupled_weight_decay(weight_decay, rate)


def mars_chain(lr: Any = 3e-3, betas: Any = (0.95, 0.99), gamma: Any = 0.025, mars_type: str = "adamw",
               optimize_1d: bool = False, lr_1d: Any = 3e-3, lr_1d_factor: Any = None, betas_1d: Any = (0.9, 0.95),
               weight_decay: Any = 0.0, weight_decay_1d: Any = 1e-1, weight_decouple: bool = True,
               fixed_decay: bool = False, ams_bound: bool = False, cautious: bool = False, eps: Any = 1e-8,
               maximize: bool = False, step: Any = None) -> GradientTransformation:
    """pytorch_optimizer.MARS's step for one parameter, as a chain, at the group's ``step`` (1 at the first;
    None: the chain counts its own steps).

    Parameters of rank >= 2 (every parameter with ``optimize_1d``) take ``maximize -> scale_by_mars ->
    -lr -> decay``; the others AdamW's step ``scale_by_mars(correct=False)`` with ``betas_1d``, the
    learning rate ``lr * lr_1d_factor`` (the reference's ``lr_1d / lr``, fixed at construction; computed here
    when not given) and ``weight_decay_1d``. Decoupled decay is the reference's
    ``p.mul_(1 - lr*wd)`` before the step; coupled decay (``weight_decouple=False``) only changes the
    gradient the reference keeps as ``last_grad``, after the step used it. State: ``exp_avg``,
    ``exp_avg_sq``, ``last_grad``, ``max_exp_avg_sq`` as ``mu``, ``nu``, ``last_grad``, ``nu_max``.
    """

    lr_1d_factor = lr_1d / lr if lr_1d_factor is None else lr_1d_factor

    def branch(lr_, betas_, wd, correct):
        b1, b2 = betas_
        return chain(
            scale_by_mars(b1, b2, gamma, eps, correct=correct, sign=correct and mars_type == "lion",
                          ams_bound=ams_bound, cautious=cautious,
                          stored_grad_decay=0.0 if weight_decouple else wd,
                          step=None if step is None else step - 1),
            scale_by_learning_rate(lr_),
            _decay(wd, lr_, weight_decouple, fixed_decay, after=False),
        )

    def labels(params):
        return jax.tree.map(lambda x: "mixed" if optimize_1d or x.ndim >= 2 else "1d", params)

    return chain(
        negate_if(maximize),
        multi_transform({"mixed": branch(lr, betas, weight_decay, True),
                         "1d": branch(lr * lr_1d_factor, betas_1d, weight_decay_1d, False)}, labels),
    )


def laprop_chain(lr: Any = 4e-4, betas: Any = (0.9, 0.999), centered: bool = False,
                 steps_before_using_centered: int = 10, weight_decay: Any = 0.0, weight_decouple: bool = True,
                 fixed_decay: bool = False, ams_bound: bool = False, eps: Any = 1e-15, cautious: bool = False,
                 maximize: bool = False, step: Any = None) -> GradientTransformation:
    """pytorch_optimizer.LaProp's step for one parameter, as a chain, at the group's ``step`` (1 at the first;
    None: the chain counts its own steps).

    ``maximize -> scale_by_laprop -> (p + u)(1 - lr*wd)``: the reference decays after the step, and its
    coupled decay (``weight_decouple=False``) changes only the gradient after it was used, so it has no
    effect. Without ``cautious`` the step size is rounded to float32, as the reference's batched path (its
    default) does. State: ``exp_avg``, ``exp_avg_sq``, ``exp_avg_lr_1``, ``exp_avg_lr_2``,
    ``exp_mean_avg_beta2``, ``max_exp_avg_sq`` as ``mu``, ``nu``, ``lr_avg``, ``weight_avg``, ``mean``, ``nu_max``.
    """
    b1, b2 = betas
    direction = scale_by_laprop(lr, b1, b2, eps, centered=centered, ams_bound=ams_bound, cautious=cautious,
                                steps_before_using_centered=steps_before_using_centered,
                                float32_step_size=not cautious, step=None if step is None else step - 1)
    return chain(negate_if(maximize), direction,
                 _decay(weight_decay, lr, weight_decouple, fixed_decay, after=True))


_ADAM_STATE = {"exp_avg": "mu", "exp_avg_sq": "nu"}


class MARS(_GroupStep):
    r"""pytorch_optimizer.MARS: variance reduction for adaptive optimizers.

    Yuan et al., 2024, *MARS: Unleashing the Power of Variance Reduction for Training Large Models*,
    https://arxiv.org/abs/2411.10438.

    .. math::
        c_t = \operatorname{clip}_1\!\Big(g_t + \gamma\tfrac{\beta_1}{1-\beta_1}(g_t - g_{t-1})\Big), \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) c_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) c_t^2, \\
        \theta_t = \theta_{t-1}(1 - \gamma_{lr}\lambda) - \gamma_{lr}
            \frac{m_t / (1-\beta_1^t)}{(\sqrt{v_t + 10^{-15}} + \epsilon)/\sqrt{1-\beta_2^t}}

    (``mars_type='lion'``: :math:`\operatorname{sign}(m_t)` instead of the fraction). Parameters of rank
    below 2 take AdamW's step with ``betas_1d``, ``lr_1d`` and ``weight_decay_1d`` unless ``optimize_1d``.
    The numbers of ``pytorch_optimizer.MARS`` (4.1.0); the step is :func:`mars_chain` (direction
    :func:`gradtx.scale_by_mars`). ``mars_type='shampoo'`` (a bfloat16 Newton-Schulz step in the
    reference) is not provided. As the reference's, each param group holds the step count ``step`` (a
    parameter without a gradient still counts the step). Differences: ``maximize`` is a param-group option;
    a negative learning rate raises ``ValueError`` (the reference's ``NegativeLRError``).

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate (default 3e-3).
      betas: :math:`(\beta_1, \beta_2)` (default (0.95, 0.99)).
      gamma: :math:`\gamma`, the weight of the gradient correction (default 0.025).
      mars_type: ``'adamw'`` or ``'lion'``.
      optimize_1d: give parameters of rank below 2 the MARS step too.
      lr_1d, betas_1d, weight_decay_1d: the AdamW step's options for parameters of rank below 2.
      weight_decay: :math:`\lambda` (default 0).
      weight_decouple: decoupled decay (default); ``False``: the reference's coupled decay.
      fixed_decay: decay by :math:`\lambda` instead of :math:`\gamma_{lr}\lambda`.
      ams_bound: divide by the running maximum of :math:`v_t`.
      cautious: mask momentum entries whose sign disagrees with the gradient.
      eps: added to the denominator (default 1e-8).
      maximize: maximize the objective instead of minimizing it.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
    """

    chain_builder = staticmethod(mars_chain)
    chain_options = ("lr", "betas", "gamma", "mars_type", "optimize_1d", "lr_1d", "lr_1d_factor", "betas_1d",
                     "weight_decay", "weight_decay_1d", "weight_decouple", "fixed_decay", "ams_bound", "cautious",
                     "eps", "maximize")
    group_options = ("step",)
    state_names = {**_ADAM_STATE, "last_grad": "last_grad", "max_exp_avg_sq": "nu_max"}

    def __init__(self, params: Any, lr: Any = 3e-3, betas: tuple[Any, Any] = (0.95, 0.99), gamma: float = 0.025,
                 mars_type: str = "adamw", optimize_1d: bool = False, lr_1d: float = 3e-3,
                 betas_1d: tuple[Any, Any] = (0.9, 0.95), weight_decay: float = 0.0, weight_decay_1d: float = 1e-1,
                 weight_decouple: bool = True, fixed_decay: bool = False, ams_bound: bool = False,
                 cautious: bool = False, eps: float = 1e-8, maximize: bool = False,
                 foreach: bool | None = None) -> None:
        check_lr(lr)
        check_lr(lr_1d)
        defaults = {"lr": lr, "lr_1d": lr_1d, "lr_1d_factor": number(lr_1d) / number(lr), "betas": betas,
                    "betas_1d": betas_1d, "mars_type": mars_type, "gamma": gamma, "optimize_1d": optimize_1d,
                    "weight_decay": weight_decay, "weight_decay_1d": weight_decay_1d,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay, "ams_bound": ams_bound,
                    "cautious": cautious, "eps": eps, "foreach": foreach, "maximize": maximize}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_lr(group["lr_1d"])
        check_betas(group)
        check_betas(group, "betas_1d")
        if group["mars_type"] not in ("adamw", "lion"):
            raise ValueError(f"mars_type {group['mars_type']} must be one of (adamw, lion); pytorch_optimizer's "
                             "'shampoo' type is not provided by gradtx")
        check_non_negative(group, "gamma", "weight_decay", "weight_decay_1d", "eps")


class LaProp(_GroupStep):
    r"""pytorch_optimizer.LaProp: momentum over the normalized gradient.

    Ziyin et al., 2020, *LaProp: Separating Momentum and Adaptivity in Adam*, https://arxiv.org/abs/2002.04839.

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1)\gamma_t \frac{g_t\sqrt{1-\beta_2^t}}{\sqrt{v_t + 10^{-15}} + \epsilon},
        \quad \theta_t = \Big(\theta_{t-1} - \frac{\gamma_t}{\bar\gamma_t} m_t\Big)(1 - \gamma_t\lambda)

    with :math:`\bar\gamma_t = \beta_1\bar\gamma_{t-1} + (1-\beta_1)\gamma_t` (``exp_avg_lr_1``). The numbers
    of ``pytorch_optimizer.LaProp`` (4.1.0); the step is :func:`laprop_chain` (direction
    :func:`gradtx.scale_by_laprop`). ``cautious`` (which the reference takes through ``**kwargs``) masks
    momentum entries whose sign disagrees with the gradient. As the reference's, each param group holds the
    step count ``step`` (a parameter without a gradient still counts the step). Differences:
    ``steps_before_using_centered`` and ``maximize`` are param-group options; ``exp_avg_lr_1``/``exp_avg_lr_2``
    are 0-d arrays (Python floats in the reference).

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 4e-4).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
      centered: subtract the squared mean gradient after ``steps_before_using_centered`` steps.
      steps_before_using_centered: default 10.
      weight_decay: :math:`\lambda` (default 0), applied after the step.
      weight_decouple: decoupled decay (default); ``False`` is the reference's coupled decay, which has no effect.
      fixed_decay: decay by :math:`\lambda` instead of :math:`\gamma\lambda`.
      ams_bound: divide by the running maximum of the second moment.
      eps: added to the denominator (default 1e-15).
      maximize: maximize the objective instead of minimizing it.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      cautious: the cautious mask.
    """

    chain_builder = staticmethod(laprop_chain)
    chain_options = ("lr", "betas", "centered", "steps_before_using_centered", "weight_decay", "weight_decouple",
                     "fixed_decay", "ams_bound", "eps", "cautious", "maximize")
    group_options = ("step",)
    optimizer_options = ("steps_before_using_centered", "maximize")  # the reference's attributes
    state_names = {**_ADAM_STATE, "exp_avg_lr_1": "lr_avg", "exp_avg_lr_2": "weight_avg",
                   "exp_mean_avg_beta2": "mean", "max_exp_avg_sq": "nu_max"}
    static_options = ("steps_before_using_centered",)

    def __init__(self, params: Any, lr: Any = 4e-4, betas: tuple[Any, Any] = (0.9, 0.999), centered: bool = False,
                 steps_before_using_centered: int = 10, weight_decay: float = 0.0, weight_decouple: bool = True,
                 fixed_decay: bool = False, ams_bound: bool = False, eps: float = 1e-15, maximize: bool = False,
                 foreach: bool | None = None, cautious: bool = False) -> None:
        defaults = {"lr": lr, "betas": betas, "centered": centered, "weight_decay": weight_decay,
                    "foreach": foreach, "weight_decouple": weight_decouple, "fixed_decay": fixed_decay,
                    "ams_bound": ams_bound, "eps": eps, "cautious": cautious, "maximize": maximize,
                    "steps_before_using_centered": steps_before_using_centered}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_betas(group)
        check_non_negative(group, "weight_decay", "eps")


def scion_chain(lr: Any = 1e-3, momentum: Any = 0.1, constraint: bool = False, norm_type: int = 1,
                norm_kwargs: Any = None, scale: Any = 1.0, weight_decay: Any = 0.0, weight_decouple: bool = True,
                maximize: bool = False, use_weight_decay: bool | None = None) -> GradientTransformation:
    """pytorch_optimizer.SCION's step for one parameter, as a chain.

    ``maximize -> (+wd*p, coupled) -> scale_by_lmo_momentum -> scale_by_lmo -> *scale -> -lr -> decay``,
    i.e. :func:`gradtx.scion` after the coupled decay; decay only without ``constraint`` and for
    ``weight_decay > 0``, as in the reference. ``norm_kwargs`` may be a dict or its items. State: ``d``.
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    decays = use_weight_decay and not constraint
    coupled = decays and not weight_decouple
    return chain(
        negate_if(maximize),
        add_decayed_weights(weight_decay) if coupled else identity(),
        scion(lr, momentum, norm_type, dict(norm_kwargs or {}), scale,
              weight_decay if decays and weight_decouple else None, constraint=constraint),
    )


class SCION(Optimizer):
    r"""pytorch_optimizer.SCION: steps given by the linear minimization oracle of a norm.

    Pethick et al., 2025, *Training Deep Learning Models with Norm-Constrained LMOs*,
    https://arxiv.org/abs/2502.07529.

    .. math::
        d_t = (1-\alpha) d_{t-1} + \alpha g_t, \quad
        \theta_t = \theta_{t-1} - \gamma\rho\,\mathrm{lmo}(d_t)

    with ``constraint`` :math:`\theta_{t-1}(1-\gamma)` in place of :math:`\theta_{t-1}`, else decoupled decay
    :math:`\theta_{t-1}(1-\gamma\lambda)` (or, with ``weight_decouple=False``, :math:`\lambda\theta` added to
    the gradient). The numbers of ``pytorch_optimizer.SCION`` (4.1.0); the step is :func:`scion_chain` and
    :func:`gradtx.lmo_direction` gives the oracles (``norm_type``: pytorch_optimizer's ``LMONorm`` value,
    0 none, 1 auto, 2 spectral, 3 spectral conv, 4 sign, 5 bias, 6 col, 7 row; the spectral ones run
    Newton–Schulz in bfloat16, as the reference does). The reference's ``init()`` (a random,
    norm-dependent re-initialisation of the parameters) is not provided. ``maximize`` is a param-group option.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      momentum: :math:`\alpha`, the new gradient's weight (default 0.1).
      constraint: the conditional-gradient form.
      norm_type: the norm (default 1, auto).
      norm_kwargs: the norm's options (a dict).
      scale: the radius :math:`\rho` (default 1).
      weight_decay: :math:`\lambda` (default 0).
      weight_decouple: decoupled decay (default).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
    """

    chain_builder = staticmethod(scion_chain)
    chain_options = ("lr", "momentum", "constraint", "norm_type", "norm_kwargs", "scale", "weight_decay",
                     "weight_decouple", "maximize")
    switches = ('weight_decay',)
    state_names = {"d": "d"}
    step_name = None  # the reference keeps its step in the param group only
    static_options = ("norm_type",)

    def __init__(self, params: Any, lr: Any = 1e-3, momentum: float = 0.1, constraint: bool = False,
                 norm_type: int = 1, norm_kwargs: dict | None = None, scale: float = 1.0, weight_decay: float = 0.0,
                 weight_decouple: bool = True, foreach: bool | None = None, maximize: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "constraint": constraint, "norm_type": norm_type,
                    "norm_kwargs": {} if norm_kwargs is None else norm_kwargs, "scale": scale,
                    "weight_decay": weight_decay, "weight_decouple": weight_decouple, "foreach": foreach,
                    "maximize": maximize}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        if not 0.0 < number(group["momentum"]) <= 1.0:
            raise ValueError("momentum must be in the range (0.0, 1.0]")
        check_positive(group, "scale")
        check_non_negative(group, "weight_decay")


def shampoo_chain(lr: Any = 1e-3, momentum: Any = 0.0, weight_decay: Any = 0.0, weight_decouple: bool = False,
                  fixed_decay: bool = False, preconditioning_compute_steps: Any = 1, matrix_eps: Any = 1e-6,
                  maximize: bool = False, use_weight_decay: bool | None = None,
                  step: Any = None) -> GradientTransformation:
    """pytorch_optimizer.Shampoo's step for one parameter, as a chain, at the group's ``step`` (1 at the first;
    None: the chain counts its own steps).

    ``scale_by_shampoo (maximize and coupled decay inside, after the momentum) -> -lr -> decoupled decay``.
    State: ``momentum_buffer``, ``pre_cond_<axis>``, ``inv_pre_cond_<axis>``.
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    coupled = use_weight_decay and not weight_decouple
    return chain(
        scale_by_shampoo(momentum, matrix_eps, preconditioning_compute_steps, weight_decay if coupled else 0.0,
                         maximize=maximize, step=None if step is None else step - 1),
        scale_by_learning_rate(lr),
        _decay(weight_decay, lr, weight_decouple, fixed_decay, after=False) if use_weight_decay else identity(),
    )


class Shampoo(_GroupStep):
    r"""pytorch_optimizer.Shampoo: one preconditioner per tensor axis.

    Gupta et al., 2018, *Shampoo: Preconditioned Stochastic Tensor Optimization*, https://arxiv.org/abs/1802.09568.

    .. math::
        \tilde g_t = g_t + \mu(u_{t-1} - g_t), \quad H_i \leftarrow H_i + \tilde G_{(i)}\tilde G_{(i)}^T, \quad
        u_t = \tilde g_t \times_1 H_1^{-1/2k} \cdots \times_k H_k^{-1/2k}, \quad \theta_t = \theta_{t-1} - \gamma u_t

    The numbers of ``pytorch_optimizer.Shampoo`` (4.1.0); the step is :func:`shampoo_chain` (direction
    :func:`gradtx.scale_by_shampoo`; the inverse roots by SVD, refreshed every ``preconditioning_compute_steps``
    steps of the param group's count ``step``, which, as the reference's, counts every step of the group).
    Differences: ``momentum_buffer`` is listed first from the first step on (the reference adds it after the
    statistics when ``momentum == 0``); ``preconditioning_compute_steps`` and ``maximize`` are param-group options.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      momentum: :math:`\mu` (default 0).
      weight_decay: :math:`\lambda` (default 0).
      weight_decouple: decoupled decay; default ``False`` (L2 added to the gradient after the momentum).
      fixed_decay: decoupled decay by :math:`\lambda` instead of :math:`\gamma\lambda`.
      preconditioning_compute_steps: steps between inverse-root refreshes (default 1).
      matrix_eps: initial diagonal of the statistics (default 1e-6).
      maximize: maximize the objective instead of minimizing it.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
    """

    chain_builder = staticmethod(shampoo_chain)
    chain_options = ("lr", "momentum", "weight_decay", "weight_decouple", "fixed_decay",
                     "preconditioning_compute_steps", "matrix_eps", "maximize")
    switches = ('weight_decay',)
    state_names = {"momentum_buffer": "momentum_buffer",
                   **{f"{name}_{axis}": f"{field}.{axis}" for axis in range(_MAX_AXES)
                      for name, field in (("pre_cond", "preconditioners"), ("inv_pre_cond", "inverse_roots"))}}
    group_options = ("step",)
    optimizer_options = ("preconditioning_compute_steps", "maximize")  # the reference's attributes

    def __init__(self, params: Any, lr: Any = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                 weight_decouple: bool = False, fixed_decay: bool = False, preconditioning_compute_steps: int = 1,
                 matrix_eps: float = 1e-6, maximize: bool = False, foreach: bool | None = None) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "weight_decouple": weight_decouple,
                    "fixed_decay": fixed_decay, "matrix_eps": matrix_eps,
                    "preconditioning_compute_steps": preconditioning_compute_steps, "maximize": maximize,
                    "foreach": foreach}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        if not 0.0 <= number(group["momentum"]) < 1.0:
            raise ValueError("momentum must be in the range [0.0, 1.0)")
        check_non_negative(group, "weight_decay")
        if number(group["preconditioning_compute_steps"]) < 1:
            raise ValueError(f"preconditioning_compute_steps must be positive. ({group['preconditioning_compute_steps']} > 0)")
        check_non_negative(group, "matrix_eps")


_EMBED_BLOCKS = ("embed", "embd", "wte", "lm_head.weight", "output.weight")
_QK_BLOCKS = ("k_proj.weight", "q_proj.weight", "wq.weight", "wk.weight")
_ATTN_BLOCKS = ("attn.attn.weight", "attn.qkv.weight")


def adam_mini_block(name: str) -> str:
    """The block kind pytorch_optimizer.AdamMini picks from a parameter's name (see :func:`adam_mini_chain`).

    Names containing ``embed``, ``embd``, ``wte``, ``lm_head.weight`` or ``output.weight`` are
    ``"embedding"``; ``k_proj.weight``, ``q_proj.weight``, ``wq.weight`` or ``wk.weight``
    ``"query_key"``; ``attn.attn.weight`` or ``attn.qkv.weight`` ``"attention"``; any other ``"tensor"``.
    """
    if any(block in name for block in _EMBED_BLOCKS):
        return "embedding"
    if any(block in name for block in _QK_BLOCKS):
        return "query_key"
    if any(block in name for block in _ATTN_BLOCKS):
        return "attention"
    return "tensor"


def adam_mini_chain(lr: Any = 1.0, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 0.1,
                    block: str = "tensor", parameter_per_head: int | None = None, num_heads: int = 32,
                    num_query_groups: int | None = None, maximize: bool = False,
                    use_weight_decay: bool | None = None) -> GradientTransformation:
    """pytorch_optimizer.AdamMini's step for a parameter of the kind ``block``, as a chain.

    ``block`` (:func:`adam_mini_block` of the parameter's name, as the reference picks it) selects the
    block of :func:`gradtx.scale_by_adam_mini`: ``"embedding"`` (embeddings and output layers) Adam's
    elements; ``"query_key"`` (query/key projections) rows of ``parameter_per_head``; ``"attention"``
    (fused attention) rows of ``(num_query_groups, heads per group + 2, -1)``; ``"tensor"`` the whole
    tensor. Then ``-lr`` and the decoupled decay ``p(1 - lr*wd)`` before the step. State: ``m``, ``v``
    or ``v_mean``, ``dimension``.
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    b1, b2 = betas
    groups = num_heads if num_query_groups is None else num_query_groups
    if block == "embedding":
        direction = scale_by_adam_mini(b1, b2, eps, "element")
    elif block == "query_key":
        direction = scale_by_adam_mini(b1, b2, eps, "rows", (-1, parameter_per_head))
    elif block == "attention":
        direction = scale_by_adam_mini(b1, b2, eps, "rows", (groups, num_heads // groups + 2, -1))
    elif block == "tensor":
        direction = scale_by_adam_mini(b1, b2, eps, "tensor")
    else:
        raise ValueError(f"adam_mini_chain: block must be 'embedding', 'query_key', 'attention' or 'tensor', "
                         f"got {block!r}")
    return chain(
        negate_if(maximize),
        direction,
        scale_by_learning_rate(lr),
        decoupled_weight_decay(weight_decay, lr) if use_weight_decay else identity(),
    )


class AdamMini(Optimizer):
    r"""pytorch_optimizer.AdamMini: Adam with one second-moment value per parameter block.

    Zhang et al., 2024, *Adam-mini: Use Fewer Learning Rates To Gain More*, https://arxiv.org/abs/2406.16793.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2)\,\overline{g_t^2},
        \quad \theta_t = \theta_{t-1}(1-\gamma\lambda) - \gamma\frac{m_t}{(1-\beta_1^t)(\sqrt{v_t/(1-\beta_2^t)}+\epsilon)}

    with :math:`\overline{g^2}` the mean over a block chosen from the parameter's name (see
    :func:`adam_mini_chain`). The numbers of ``pytorch_optimizer.AdamMini`` (4.1.0), which computes and keeps
    its state in float32 for every parameter dtype. As in the reference, every parameter is its own param
    group (``name``, ``weight_decay`` — 0 for names containing ``norm`` or ``ln_f`` — and, for query/key
    projections, ``parameter_per_head = num_embeds**2 // num_heads``).

    ``model`` is a pytree of arrays (or :class:`gradtx.optim.Parameter` boxes): its ``.``-joined paths play
    the part of ``named_parameters()``, and ``opt.params`` / ``opt.step(grads)`` use its structure.
    Differences: ``num_heads``, ``num_query_groups`` and ``maximize`` are param-group options; the state
    has no ``head`` or ``reduced`` entries (Python values in the reference); ``model_sharding`` is accepted
    and has no effect (JAX arrays are global: sharded parameters need no all-gather of their sizes).

    Args:
      model: the parameters, a pytree of arrays.
      lr: learning rate :math:`\gamma` (default 1.0).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
      weight_decay: :math:`\lambda` (default 0.1), decoupled.
      model_sharding: accepted for compatibility.
      num_embeds: the model width (default 2048).
      num_heads: attention heads (default 32).
      num_query_groups: key/value groups (default ``num_heads``).
      eps: added to the denominator (default 1e-8).
      maximize: maximize the objective instead of minimizing it.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
    """

    chain_builder = staticmethod(adam_mini_chain)
    chain_options = ("lr", "betas", "eps", "weight_decay", "num_heads", "num_query_groups", "maximize")
    group_options = ("parameter_per_head",)
    optimizer_options = ("num_heads", "num_query_groups", "maximize")  # the reference's attributes
    switches = ('weight_decay',)
    state_names = {"m": "m", "v": "v", "v_mean": "v_mean", "dimension": "dimension"}
    static_options = ("parameter_per_head", "num_heads", "num_query_groups")

    @classmethod
    def flags(cls, group: dict[str, Any]) -> dict[str, Any]:
        """The weight-decay switch and the block kind of the group's parameter (:func:`adam_mini_block` of its
        ``name``): the chain takes the kind, not the name, so parameters of one kind share compiled programs."""
        return {**super().flags(group), "block": adam_mini_block(str(group.get("name", "")))}

    def __init__(self, model: Any, lr: Any = 1.0, betas: tuple[Any, Any] = (0.9, 0.999), weight_decay: float = 0.1,
                 model_sharding: bool = False, num_embeds: int = 2048, num_heads: int = 32,
                 num_query_groups: int | None = None, eps: float = 1e-8, maximize: bool = False,
                 foreach: bool | None = None) -> None:
        check_non_negative({"weight_decay": weight_decay}, "weight_decay")
        check_positive({"num_embeds": num_embeds, "num_heads": num_heads}, "num_embeds", "num_heads")
        query_groups = num_heads if num_query_groups is None else num_query_groups
        check_positive({"num_query_groups": query_groups}, "num_query_groups")
        for x, y in ((num_embeds, num_heads), (num_heads, query_groups)):
            if x % y != 0:
                raise ValueError(f"{x} must be divisible by {y}")
        self.model_sharding, self.num_embeds, self.num_heads = model_sharding, num_embeds, num_heads
        whole = path_groups(model, [(lambda path, leaf: True, {})])
        groups = []
        for name, box in whole.groups[0]["params"]:
            group = {"name": name, "params": [(name, box)],
                     "weight_decay": 0.0 if ("norm" in name or "ln_f" in name) else weight_decay}
            if any(block in name for block in _QK_BLOCKS):
                group["parameter_per_head"] = num_embeds * num_embeds // num_heads
            groups.append(group)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "num_heads": num_heads,
                    "num_query_groups": query_groups, "maximize": maximize, "foreach": foreach}
        super().__init__(ParamGroups(groups, whole.tree), defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_betas(group)
        check_non_negative(group, "eps")
