"""torch.optim.Adagrad, RMSprop, Adadelta and Adamax as declarations over gradtx's transforms.

Each ``*_chain`` takes torch's keyword names and defaults for one parameter
group and returns a chain whose updates equal torch 2.13's single-tensor step.
The ``use_*`` flags say whether a stage exists at all (torch skips weight decay
when ``weight_decay == 0`` and keeps no momentum buffer when ``momentum == 0``);
they default to whether the value is non-zero, and callers that pass traced
values set them explicitly. The classes are the declarations (see
:class:`gradtx.optim.Optimizer`): a chain builder, torch's state names, torch's
signature and checks.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradtx import (
    GradientTransformation, add_decayed_weights, chain, identity, negate_if, scale_by_adadelta, scale_by_adamax,
    scale_by_learning_rate, scale_by_rms, scale_by_rss, scale_by_stddev, trace, value_at,
)
from gradtx.optim._declare import check_torch_ranges
from gradtx.optim._optimizer import Optimizer, number

__all__ = ["Adagrad", "RMSprop", "Adadelta", "Adamax"]


def _flag(flag: bool | None, value: Any) -> bool:
    return bool(value != 0) if flag is None else flag


def _head(maximize: bool, weight_decay: Any, use_weight_decay: bool | None) -> tuple[GradientTransformation, ...]:
    """torch's common prologue: negate the gradient, then add coupled L2 decay."""
    return (
        negate_if(maximize),
        add_decayed_weights(weight_decay) if _flag(use_weight_decay, weight_decay) else identity(),
    )


def adagrad_chain(lr: Any = 1e-2, lr_decay: Any = 0.0, weight_decay: Any = 0.0, initial_accumulator_value: Any = 0.0,
                  eps: Any = 1e-10, maximize: bool = False, use_weight_decay: bool | None = None
                  ) -> GradientTransformation:
    r"""torch.optim.Adagrad's step for one parameter group, as a chain.

    ``maximize -> +wd*p -> scale_by_rss(eps outside the root) -> -clr``, where torch's
    step size at step :math:`t` (from 1) is :math:`\eta / (1 + (t-1)\,\text{lr\_decay})`,
    here a schedule of the step count.
    """
    step_size = lambda count: value_at(lr, count) / (1 + count * value_at(lr_decay, count))  # noqa: E731
    return chain(
        *_head(maximize, weight_decay, use_weight_decay),
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=False),
        scale_by_learning_rate(step_size),
    )


def rmsprop_chain(lr: Any = 1e-2, alpha: Any = 0.99, eps: Any = 1e-8, weight_decay: Any = 0.0, momentum: Any = 0.0,
                  centered: bool = False, maximize: bool = False, use_momentum: bool | None = None,
                  use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.RMSprop's step for one parameter group, as a chain.

    ``maximize -> +wd*p -> scale_by_rms / scale_by_stddev(decay=alpha, eps outside the root)
    -> trace(momentum) -> -lr``. torch's momentum buffer accumulates the rescaled
    gradient before the learning rate (``buf = momentum * buf + g / avg``, starting
    from zero), unlike :func:`gradtx.rmsprop`, whose trace follows the lr.
    """
    rescale = scale_by_stddev if centered else scale_by_rms
    return chain(
        *_head(maximize, weight_decay, use_weight_decay),
        rescale(decay=alpha, eps=eps, eps_in_sqrt=False),
        trace(momentum) if _flag(use_momentum, momentum) else identity(),
        scale_by_learning_rate(lr),
    )


def adadelta_chain(lr: Any = 1.0, rho: Any = 0.9, eps: Any = 1e-6, weight_decay: Any = 0.0, maximize: bool = False,
                   use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.Adadelta's step for one parameter group: ``maximize -> +wd*p -> scale_by_adadelta -> -lr``."""
    return chain(
        *_head(maximize, weight_decay, use_weight_decay),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(lr),
    )


def adamax_chain(lr: Any = 2e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 0.0,
                 maximize: bool = False, use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.Adamax's step for one parameter group: ``maximize -> +wd*p -> scale_by_adamax -> -lr``."""
    b1, b2 = betas
    return chain(
        *_head(maximize, weight_decay, use_weight_decay),
        scale_by_adamax(b1, b2, eps),
        scale_by_learning_rate(lr),
    )


class Adagrad(Optimizer):
    r"""torch.optim.Adagrad (Duchi et al., 2011, https://jmlr.org/papers/v12/duchi11a.html).

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \quad
        s_t = s_{t-1} + g_t^2, \quad
        \theta_t = \theta_{t-1} - \frac{\gamma}{1 + (t-1)\,\eta} \frac{g_t}{\sqrt{s_t} + \epsilon}

    The same numbers as torch 2.13's ``Adagrad``; the step is :func:`adagrad_chain`.
    As torch's, ``opt.state[p]`` (``step``, ``sum``) is created when a parameter
    joins the optimizer, with the *defaults'* ``initial_accumulator_value`` (torch
    ignores a group's own value); for groups added later torch creates it at their
    first step instead, so their entries appear earlier here, with the same values.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-2).
      lr_decay: :math:`\eta`, the step-size decay (default 0).
      weight_decay: :math:`\lambda`, L2 penalty (default 0).
      initial_accumulator_value: :math:`s_0` (default 0).
      eps: :math:`\epsilon`, added to the root (default 1e-10).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
      differentiable: accepted for torch compatibility.
      fused: ``True`` or ``None`` (with ``foreach=None``): one program for all groups.
    """

    chain_builder = staticmethod(adagrad_chain)
    chain_options = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize")
    switches = ('weight_decay',)
    state_names = {"sum": "sum_of_squares"}
    elementwise = True

    def __init__(self, params: Any, lr: Any = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None) -> None:
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a param group and, as torch's Adagrad does, creates its parameters' state now.

        JAX arrays are values, so the new entries share arrays: one step for the
        group (its parameters then step as one bucket, as after any step) and
        one ``sum`` per shape, dtype and sharding. Thousands of parameters cost
        a few arrays, not two each; a step copies a shared entry before reusing
        its buffer.
        """
        super().add_param_group(param_group)
        value = number(self.defaults["initial_accumulator_value"])
        step = jnp.zeros((), jnp.float32)
        sums: dict[tuple, Any] = {}
        for p in self.param_groups[-1]["params"]:
            if self.state.get(p):
                continue
            data = p.data
            key = (data.shape, data.dtype, data.sharding, data.committed)
            if key not in sums:
                fill = complex(value, value) if jnp.iscomplexobj(data) else value
                # placed as the parameter is (a sum committed to a device where the parameter is not would make
                # the step's results committed, and the second step compile its programs again)
                sums[key] = jnp.full(data.shape, fill, data.dtype, device=data.sharding if data.committed else None)
            self.state[p] = {"step": step, "sum": sums[key]}


class RMSprop(Optimizer):
    r"""torch.optim.RMSprop (Tieleman & Hinton, 2012), optionally centered (Graves, 2013, https://arxiv.org/abs/1308.0850).

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \quad
        v_t = \alpha v_{t-1} + (1-\alpha) g_t^2, \quad
        \bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t \ \text{(centered)}, \\
        d_t = \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centered) or } \sqrt{v_t} + \epsilon, \quad
        b_t = \mu b_{t-1} + g_t / d_t, \quad
        \theta_t = \theta_{t-1} - \gamma\, b_t \ (\text{or } \gamma\, g_t / d_t \text{ when } \mu = 0)

    The same numbers as torch 2.13's ``RMSprop``; the step is :func:`rmsprop_chain`.
    ``opt.state[p]`` holds ``step``, ``square_avg``, and ``momentum_buffer`` (when
    ``momentum > 0``) and ``grad_avg`` (when centered).

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-2).
      alpha: :math:`\alpha`, the smoothing constant (default 0.99).
      eps: :math:`\epsilon`, added to the root (default 1e-8).
      weight_decay: :math:`\lambda`, L2 penalty (default 0).
      momentum: :math:`\mu` (default 0).
      centered: divide by the estimated standard deviation of the gradient.
      capturable: accepted for torch compatibility (every step is a compiled program).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
      differentiable: accepted for torch compatibility.
    """

    chain_builder = staticmethod(rmsprop_chain)
    chain_options = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    switches = ('momentum', 'weight_decay')
    state_names = {"square_avg": "nu", "momentum_buffer": "trace", "grad_avg": "mu"}
    elementwise = True

    def __init__(self, params: Any, lr: Any = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                    "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", "eps", "momentum", "weight_decay", "alpha")


class Adadelta(Optimizer):
    r"""torch.optim.Adadelta (Zeiler, 2012, https://arxiv.org/abs/1212.5701).

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \quad
        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
        \Delta_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t, \quad
        u_t = \rho u_{t-1} + (1-\rho) \Delta_t^2, \quad
        \theta_t = \theta_{t-1} - \gamma \Delta_t

    The same numbers as torch 2.13's ``Adadelta``; the step is :func:`adadelta_chain`.
    ``opt.state[p]`` holds ``step``, ``square_avg`` and ``acc_delta``.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: :math:`\gamma`, scales the step (default 1.0).
      rho: :math:`\rho`, the decay of both averages (default 0.9).
      eps: :math:`\epsilon`, added under both roots (default 1e-6).
      weight_decay: :math:`\lambda`, L2 penalty (default 0).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      capturable: accepted for torch compatibility (every step is a compiled program).
      maximize: maximize the objective instead of minimizing it.
      differentiable: accepted for torch compatibility.
    """

    chain_builder = staticmethod(adadelta_chain)
    chain_options = ("lr", "rho", "eps", "weight_decay", "maximize")
    switches = ('weight_decay',)
    state_names = {"square_avg": "e_g", "acc_delta": "e_x"}
    elementwise = True

    def __init__(self, params: Any, lr: Any = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0,
                 foreach: bool | None = None, *, capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False) -> None:
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "capturable": capturable, "foreach": foreach, "differentiable": differentiable}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", ("rho", "[0, 1]"), "eps", "weight_decay")


class Adamax(Optimizer):
    r"""torch.optim.Adamax (Kingma & Ba, 2015, section 7, https://arxiv.org/abs/1412.6980).

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
        \theta_t = \theta_{t-1} - \frac{\gamma}{1-\beta_1^t} \frac{m_t}{u_t}

    The same numbers as torch 2.13's ``Adamax``; the step is :func:`adamax_chain`.
    ``opt.state[p]`` holds ``step``, ``exp_avg`` and ``exp_inf``.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 2e-3).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
      eps: :math:`\epsilon`, added to :math:`|g_t|` inside the maximum (default 1e-8).
      weight_decay: :math:`\lambda`, L2 penalty (default 0).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
      differentiable: accepted for torch compatibility.
      capturable: accepted for torch compatibility (every step is a compiled program).
    """

    chain_builder = staticmethod(adamax_chain)
    chain_options = ("lr", "betas", "eps", "weight_decay", "maximize")
    switches = ('weight_decay',)
    state_names = {"exp_avg": "mu", "exp_inf": "nu"}
    elementwise = True

    def __init__(self, params: Any, lr: Any = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "capturable": capturable}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", "eps", "betas", "weight_decay")
