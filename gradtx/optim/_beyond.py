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

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import (
    GradientTransformation, ProdigyState, add_decayed_weights, chain, identity, negate_if, prodigy,
    scale_by_ademamix, scale_by_adopt, scale_by_learning_rate, decoupled_weight_decay as decay_after_lr,
)
from gradtx.optim._declare import check_betas, check_non_negative, check_torch_ranges
from gradtx.optim._optimizer import Optimizer, number

__all__ = ["ADOPT", "AdEMAMix", "NegativeLRError", "Prodigy"]


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


# Options a Prodigy step takes as numbers (traced: editing them does not recompile) and as structure.
_PRODIGY_NUMBERS = ("lr", "betas", "eps", "weight_decay", "d0", "d_coef")
_PRODIGY_FLAGS = ("beta3", "use_bias_correction", "decouple", "safeguard_warmup")


@functools.cache
def _prodigy_program(beta3_is_none: bool, use_bias_correction: bool, decouple: bool, safeguard_warmup: bool):
    """One compiled Prodigy step over a list of parameters; also returns torch's ``d_denom`` and ``d_hat``."""

    @jax.jit
    def program(params, grads, state, numbers, beta3):
        tx = prodigy(numbers["lr"], numbers["betas"], None if beta3_is_none else beta3, numbers["eps"],
                     estim_lr0=numbers["d0"], estim_lr_coef=numbers["d_coef"], weight_decay=numbers["weight_decay"],
                     safeguard_warmup=safeguard_warmup, bias_correction=use_bias_correction, decouple=decouple)
        updates, state = tx.update(grads, state, params)
        new_params = [(p + u).astype(p.dtype) for p, u in zip(params, updates)]
        d_denom = sum(jnp.sum(jnp.abs(s)) for s in state.grad_sum)
        return new_params, state, d_denom, numbers["d_coef"] * state.numerator_weighted / d_denom

    return program


class Prodigy(Optimizer):
    r"""prodigyopt.Prodigy (Mishchenko & Defazio, 2023, https://arxiv.org/abs/2306.06101): Adam with a learned step size.

    The step is :func:`gradtx.prodigy` with ``bias_correction=use_bias_correction`` and
    ``decouple=decouple``, run over all parameters at once (the estimate :math:`d` is one
    number for the whole model). The same numbers as ``prodigyopt.Prodigy`` 1.1.2 with
    ``betas[0] > 0``; the param groups hold ``d``, ``d0``, ``d_max``, ``d_numerator``,
    ``k`` (and, after a step, ``d_denom`` and ``d_hat``) as prodigyopt's do, and
    ``opt.state[p]`` holds ``step``, ``s``, ``p0`` (flattened, as prodigyopt keeps them),
    ``exp_avg`` and ``exp_avg_sq``.

    Not supported (a ``ValueError`` says so): several param groups with different
    options, ``growth_rate`` other than ``inf``, ``slice_p`` other than 1, ``fsdp_in_use``
    (shard the parameters with JAX instead) and ``betas[0] == 0`` (prodigyopt then steps
    with the new :math:`d`).

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate, a multiplier of :math:`d` (default 1.0).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
      beta3: decay of the estimate's sums (default :math:`\sqrt{\beta_2}`).
      eps: added to the denominator, scaled by :math:`d` (default 1e-8).
      weight_decay: decay strength (default 0).
      decouple: decoupled (AdamW) decay; ``False``: L2 added to the gradient (default True).
      use_bias_correction: Adam's bias correction in the step size (default False).
      safeguard_warmup: leave the learning rate out of the denominator's sum (default False).
      d0: the initial estimate (default 1e-6).
      d_coef: a multiplier of the estimate (default 1.0).
      growth_rate: the estimate's largest growth per step (only ``inf``).
      fsdp_in_use: only False.
      slice_p: only 1.
      foreach: accepted and ignored (one compiled program steps every parameter).
    """

    chain_builder = None  # steps itself (its own _step)
    step_name = None

    def __init__(self, params: Any, lr: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, eps: float = 1e-8, weight_decay: float = 0, decouple: bool = True,
                 use_bias_correction: bool = False, safeguard_warmup: bool = False, d0: float = 1e-6,
                 d_coef: float = 1.0, growth_rate: float = float("inf"), fsdp_in_use: bool = False,
                 slice_p: int = 1, *, foreach: bool | None = None) -> None:
        del foreach  # the facade's tier option; Prodigy's step is always one program over all parameters
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay, d=d0, d0=d0, d_max=d0,
                        d_numerator=0.0, d_coef=d_coef, k=0, growth_rate=growth_rate,
                        use_bias_correction=use_bias_correction, decouple=decouple,
                        safeguard_warmup=safeguard_warmup, fsdp_in_use=fsdp_in_use, slice_p=slice_p)
        self.d0 = d0
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        """prodigyopt's checks, in its order and words, then what this class does not reproduce."""
        check_torch_ranges(group, ("d0", "(0, inf)"), ("lr", "(0, inf)"), ("eps", "(0, inf)"), "betas")
        if group["beta3"] is not None and not 0.0 <= number(group["beta3"]) < 1.0:  # None: sqrt(beta2)
            raise ValueError(f"Invalid beta3 value: {group['beta3']} (None, or a number in [0, 1))")
        unsupported = {"growth_rate": (group["growth_rate"] != float("inf"), "inf"),
                       "slice_p": (group["slice_p"] != 1, "1"), "fsdp_in_use": (group["fsdp_in_use"], "False"),
                       "betas[0]": (number(group["betas"][0]) == 0.0, "> 0")}
        for name, (bad, supported) in unsupported.items():
            if bad:
                raise ValueError(f"gradtx.optim.Prodigy supports {name} {supported} only (got {group.get(name)}); "
                                 "use gradtx.prodigy in a functional loop for other variants")

    def check_loaded_state(self, p: Any, entry: dict[str, Any], where: str) -> None:
        """prodigyopt's entries: all five or none (its step reads each), ``step`` a count, arrays of ``p``'s size."""
        if not entry:
            return
        missing = [k for k in ("step", "s", "p0", "exp_avg", "exp_avg_sq") if k not in entry]
        if missing:
            raise KeyError(f"{where}: Prodigy keeps 'step', 's', 'p0', 'exp_avg' and 'exp_avg_sq', but the entry "
                           f"lacks {missing}; prodigyopt's step would raise KeyError. Load a state dict saved by "
                           "Prodigy, or drop this parameter's entry to start it fresh")
        step = np.asarray(entry["step"])
        if step.size != 1 or not np.issubdtype(step.dtype, np.number) or step.reshape(()) < 0 \
                or step.reshape(()) != np.floor(step.reshape(())):
            raise ValueError(f"{where}: 'step' must be a non-negative whole number, got {entry['step']!r}")
        shapes = {"s": [(p.size,)], "p0": [(p.size,), (1,)], "exp_avg": [tuple(p.shape)], "exp_avg_sq": [tuple(p.shape)]}
        for key, allowed in shapes.items():  # prodigyopt keeps s and p0 flat, the moments in the parameter's shape
            if tuple(np.shape(entry[key])) not in allowed:
                raise ValueError(f"{where}: {key!r} has shape {np.shape(entry[key])}, but Prodigy keeps it with "
                                 f"shape {allowed[0]} for a parameter of shape {tuple(p.shape)}")

    def _check_groups(self) -> None:
        first = {k: v for k, v in self.param_groups[0].items() if k not in ("params", "param_names")}
        for i, group in enumerate(self.param_groups[1:], 1):
            if {k: v for k, v in group.items() if k not in ("params", "param_names")} != first:
                raise ValueError(f"gradtx.optim.Prodigy steps all parameters with one estimate d and one set of "
                                 f"options; param group {i} has options different from group 0's; use one group")

    def _step(self, grads: Any = None, closure: Any = None) -> Any:
        loss = self._take_gradients(grads, closure)
        self._check_groups()
        group = self.param_groups[0]
        boxes = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not boxes:
            return loss
        saved = [self.state.get(p, {}) for p in boxes]
        params = [p.data for p in boxes]
        state = ProdigyState(
            exp_avg=[jnp.asarray(s["exp_avg"]) if s else jnp.zeros_like(x) for s, x in zip(saved, params)],
            exp_avg_sq=[jnp.asarray(s["exp_avg_sq"]) if s else jnp.zeros_like(x) for s, x in zip(saved, params)],
            grad_sum=[jnp.asarray(s["s"]).reshape(x.shape) if s else jnp.zeros_like(x) for s, x in zip(saved, params)],
            params0=[jnp.broadcast_to(jnp.asarray(s["p0"]).reshape(x.shape if jnp.size(s["p0"]) > 1 else ()), x.shape)
                     if s else x for s, x in zip(saved, params)],
            estim_lr=jnp.asarray(group["d"], params[0].dtype),
            numerator_weighted=jnp.asarray(group["d_numerator"], params[0].dtype),
            count=jnp.asarray(group["k"], jnp.int32))
        numbers = {k: group[k] for k in _PRODIGY_NUMBERS}
        program = _prodigy_program(group["beta3"] is None, *(bool(group[k]) for k in _PRODIGY_FLAGS[1:]))
        new_params, state, d_denom, d_hat = program(params, [p.grad for p in boxes], state, numbers,
                                                    0.0 if group["beta3"] is None else group["beta3"])
        for i, p in enumerate(boxes):
            p.data = new_params[i]
            # Kept in the parameter's dtype, as prodigyopt's in-place updates keep them (d may be wider).
            self.state[p] = {"step": saved[i].get("step", 0) + 1, "s": state.grad_sum[i].reshape(-1).astype(p.dtype),
                             "p0": state.params0[i].reshape(-1).astype(p.dtype),
                             "exp_avg": state.exp_avg[i].astype(p.dtype), "exp_avg_sq": state.exp_avg_sq[i].astype(p.dtype)}
        for g in self.param_groups:
            g.update(d_numerator=float(state.numerator_weighted), d_denom=float(d_denom), d=float(state.estim_lr),
                     d_max=float(state.estim_lr), d_hat=float(d_hat), k=g["k"] + 1)
        return loss
