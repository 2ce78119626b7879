r"""``pytorch_optimizer`` (4.1) classes as declarations, ADOPT and AdEMAMix with their ``cautious`` option; and
``prodigyopt.Prodigy`` (1.1), whose step size is one number for all parameters (see :class:`Prodigy`).

As ``pytorch_optimizer`` keeps them, each param group holds the step count
``step`` (it appears at the first step and advances every step), and the
per-parameter state holds only the moments. ``maximize`` (and ADOPT's clip bound
of the current step, ``clip``) are kept in the param group too, where
``pytorch_optimizer`` keeps them on the optimizer: each group's step is one
compiled program of its options. Extra keyword arguments (``cautious=True``,
Cautious optimizers, https://arxiv.org/abs/2411.16085) go into the groups as the
package's ``**kwargs`` do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from gradtx import (
    GradientTransformation, add_decayed_weights, chain, identity, negate_if,
    scale_by_ademamix, scale_by_adopt, scale_by_learning_rate, decoupled_weight_decay as decay_after_lr,
)
from gradtx.optim._declare import check_betas, check_non_negative
from gradtx.optim._optimizer import Optimizer, number

__all__ = ["ADOPT", "AdEMAMix", "NegativeLRError"]


class NegativeLRError(Exception):
    """A learning rate is negative (``pytorch_optimizer``'s exception of that name and message)."""

    def __init__(self, lr: float, lr_type: str = "") -> None:
        self.note = lr_type or "learning rate"
        self.message = f"{self.note} must be positive. ({lr} > 0)"
        super().__init__(self.message)


def pytorch_optimizer_family(direction: GradientTransformation, lr: Any, weight_decay: Any, weight_decouple: bool,
                             fixed_decay: bool, maximize: bool, use_weight_decay: bool) -> GradientTransformation:
    """``pytorch_optimizer``'s step around a direction: ``maximize -> (+wd*p) -> direction -> -lr -> (-wd*p)``.

    Its ``apply_weight_decay``: decoupled, ``p *= 1 - wd * (1 if fixed_decay else lr)``
    before the step (written as an update after the learning rate); otherwise
    ``wd * p`` is added to the gradient.
    """
    return chain(
        negate_if(maximize),
        add_decayed_weights(weight_decay) if use_weight_decay and not weight_decouple else identity(),
        direction,
        scale_by_learning_rate(lr),
        decay_after_lr(weight_decay, 1.0 if fixed_decay else lr) if use_weight_decay and weight_decouple
        else identity(),
    )


def adopt_chain(lr: Any, betas: Any, eps: Any, weight_decay: Any, step: Any, clip: Any = None,
                weight_decouple: bool = False, fixed_decay: bool = False, maximize: bool = False,
                cautious: bool = False, use_weight_decay: bool = True) -> GradientTransformation:
    """pytorch_optimizer.ADOPT's step for one parameter at the group's ``step`` (1 at the first), clipping at ``clip``."""
    direction = scale_by_adopt(betas[0], betas[1], eps, use_clipping=clip is not None,
                               clip_value_fn=lambda count: clip, step=step - 1, cautious=cautious)
    return pytorch_optimizer_family(direction, lr, weight_decay, weight_decouple, fixed_decay, maximize,
                                    use_weight_decay)


def _without_count_m2(tx: GradientTransformation) -> GradientTransformation:
    """``scale_by_ademamix`` driven by the group's step keeps one count in its state (torch's per-parameter view has
    no second one): ``count_m2`` is dropped from the state and restored from ``count`` for each update."""

    def init(params):
        return tx.init(params)._replace(count_m2=None)

    def update(updates, state, params=None, **extra_args):
        updates, state = tx.update(updates, state._replace(count_m2=state.count), params, **extra_args)
        return updates, state._replace(count_m2=None)

    return GradientTransformation(init, update)


def ademamix_chain(lr: Any, betas: Any, eps: Any, weight_decay: Any, alpha: Any, step: Any,
                   t_alpha_beta3: Any = None, weight_decouple: bool = False, fixed_decay: bool = False,
                   maximize: bool = False, cautious: bool = False, use_weight_decay: bool = True
                   ) -> GradientTransformation:
    """pytorch_optimizer.AdEMAMix's step for one parameter at the group's ``step``, with its alpha/beta3 warmup."""
    beta1, beta2, beta3 = betas
    alpha_t, beta3_t = alpha, beta3
    if t_alpha_beta3 is not None:
        frac = step / t_alpha_beta3
        alpha_t = jnp.minimum(step * alpha / t_alpha_beta3, alpha)
        log_beta1, log_beta3 = jnp.log(beta1), jnp.log(beta3)
        beta3_t = jnp.minimum(jnp.exp(log_beta1 * log_beta3 / ((1.0 - frac) * log_beta3 + frac * log_beta1)), beta3)
    direction = _without_count_m2(scale_by_ademamix(beta1, beta2, beta3_t, alpha_t, eps, step=step - 1,
                                                    cautious=cautious))
    return pytorch_optimizer_family(direction, lr, weight_decay, weight_decouple, fixed_decay, maximize,
                                    use_weight_decay)


def _check_common(group: dict[str, Any]) -> None:
    """pytorch_optimizer's validate_learning_rate, validate_betas and validate_non_negative, in its words."""
    if number(group["lr"]) < 0.0:
        raise NegativeLRError(group["lr"])
    betas = group["betas"]
    check_betas(group)
    if len(betas) > 2 and not 0.0 <= number(betas[2]) <= 1.0:
        raise ValueError("beta3 must be in the range [0.0, 1.0]")


class _GroupStep(Optimizer):
    """pytorch_optimizer's bookkeeping: each group's ``step`` (0 before the first) advances before every update."""

    step_name = None  # the step lives in the param group
    elementwise = False  # the cautious mask is per array

    def _advance(self, group: dict[str, Any]) -> None:
        """Per-step group values computed in Python, as the reference computes them."""

    def _step(self, grads: Any = None, closure: Any = None) -> Any:
        saved = [dict(group) for group in self.param_groups]
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            self._advance(group)
        try:
            return super()._step(grads, closure)
        except BaseException:
            for group, before in zip(self.param_groups, saved):
                group.clear()
                group.update(before)
            raise


class ADOPT(_GroupStep):
    r"""pytorch_optimizer.ADOPT (Taniguchi et al., 2024, https://arxiv.org/abs/2411.02853).

    .. math::
        u_t = \mathrm{clip}\Big(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)}, c(t)\Big), \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) u_t, \quad \theta_t = \theta_{t-1} - \gamma m_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

    with :math:`v_1 = g_1^2` and no step at :math:`t = 1` (weight decay still
    applies). The same numbers as ``pytorch_optimizer.ADOPT`` 4.1.0; the direction is
    :func:`gradtx.scale_by_adopt`. ``opt.state[p]`` holds ``exp_avg`` and
    ``exp_avg_sq``; the param groups hold ``step``, ``maximize`` and ``clip``
    (:math:`c(t)`, ``clip_lambda(step)``, or None).

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate (default 1e-3).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.9999)).
      clip_lambda: the clip bound as a function of the step (default :math:`t^{1/4}`); None: no clipping.
      weight_decay: decay strength (default 0).
      weight_decouple: decoupled (AdamW-style) decay instead of L2 (default False).
      fixed_decay: decoupled decay not scaled by the learning rate (default False).
      foreach: ``True`` compiles one program per group, ``False`` a per-parameter loop, ``None`` one for all.
      eps: floor of the denominator (default 1e-6).
      maximize: maximize the objective.
      **kwargs: extra group options; ``cautious=True`` masks the update by its agreement
        with the normalised gradient (https://arxiv.org/abs/2411.16085).
    """

    chain_builder = staticmethod(adopt_chain)
    chain_options = ("lr", "betas", "eps", "weight_decay", "weight_decouple", "fixed_decay", "maximize")
    group_options = ("step", "clip", "cautious")
    switches = ('weight_decay',)
    state_names = {"exp_avg": "mu", "exp_avg_sq": "nu"}

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.9999),
                 clip_lambda: Callable[[float], float] | None = lambda step: math.pow(step, 0.25),
                 weight_decay: float = 0.0, weight_decouple: bool = False, fixed_decay: bool = False,
                 foreach: bool | None = None, eps: float = 1e-6, maximize: bool = False, **kwargs: Any) -> None:
        self.clip_lambda = clip_lambda
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay, "weight_decouple": weight_decouple,
                    "fixed_decay": fixed_decay, "foreach": foreach, "eps": eps, "maximize": maximize, **kwargs}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        _check_common(group)
        check_non_negative(group, "weight_decay", "eps")

    def _advance(self, group: dict[str, Any]) -> None:
        group["clip"] = None if self.clip_lambda is None else float(self.clip_lambda(group["step"]))


class AdEMAMix(_GroupStep):
    r"""pytorch_optimizer.AdEMAMix (Pagliardini et al., 2024, https://arxiv.org/abs/2409.03137).

    .. math::
        m^{(1)}_t = \beta_1 m^{(1)}_{t-1} + (1-\beta_1) g_t, \quad
        m^{(2)}_t = \beta_3 m^{(2)}_{t-1} + (1-\beta_3) g_t, \quad
        \theta_t = \theta_{t-1} - \gamma\, \frac{m^{(1)}_t / (1-\beta_1^t) + \alpha\, m^{(2)}_t}
        {\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    with ``t_alpha_beta3`` warming :math:`\alpha` up linearly and :math:`\beta_3` up
    from :math:`\beta_1` as the paper does. The same numbers as
    ``pytorch_optimizer.AdEMAMix`` 4.1.0; the direction is :func:`gradtx.scale_by_ademamix`.
    ``opt.state[p]`` holds ``exp_avg``, ``exp_avg_sq`` and ``exp_avg_slow``; the param
    groups hold ``step`` and ``maximize``.

    Args:
      params: parameters or param groups.
      lr: learning rate (default 1e-3).
      betas: :math:`(\beta_1, \beta_2, \beta_3)` (default (0.9, 0.999, 0.9999)).
      weight_decay: decay strength (default 0).
      weight_decouple: decoupled decay instead of L2 (default False).
      fixed_decay: decoupled decay not scaled by the learning rate (default False).
      alpha: weight of the slow EMA (default 5.0).
      t_alpha_beta3: warmup length of alpha and beta3 (default None: no warmup).
      eps: added to the denominator (default 1e-8).
      maximize: maximize the objective.
      foreach: as :class:`ADOPT`.
      **kwargs: extra group options; ``cautious=True`` masks the fast EMA by its
        agreement with the gradient (https://arxiv.org/abs/2411.16085).
    """

    chain_builder = staticmethod(ademamix_chain)
    chain_options = ("lr", "betas", "eps", "weight_decay", "alpha", "t_alpha_beta3", "weight_decouple", "fixed_decay",
                     "maximize")
    group_options = ("step", "cautious")
    switches = ('weight_decay',)
    state_names = {"exp_avg": "m1", "exp_avg_sq": "nu", "exp_avg_slow": "m2"}

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
                 weight_decay: float = 0.0, weight_decouple: bool = False, fixed_decay: bool = False,
                 alpha: float = 5.0, t_alpha_beta3: float | None = None, eps: float = 1e-8, maximize: bool = False,
                 foreach: bool | None = None, **kwargs: Any) -> None:
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay, "weight_decouple": weight_decouple,
                    "fixed_decay": fixed_decay, "alpha": alpha, "t_alpha_beta3": t_alpha_beta3, "eps": eps,
                    "foreach": foreach, "maximize": maximize, **kwargs}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        _check_common(group)
        check_non_negative(group, "alpha", "t_alpha_beta3", "weight_decay", "eps")
