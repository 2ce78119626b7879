r"""pytorch-optimizer's GaLore, SophiaH and Kron as declarations over gradtx's transforms.

Both keep torch-style per-parameter state but count steps per *group*
(pytorch-optimizer's ``group["step"]``, which ``state_dict()`` carries in
``param_groups``), and both take ``maximize`` as an optimizer attribute rather
than a group option; as in pytorch-optimizer, maximizing negates each ``p.grad``
in place before the update.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import (
    GradientTransformation, add_decayed_weights, chain, galore_side, identity, init_kron_factors, kron_leaf_step,
    kron_update_probability, scale_by_adam, scale_by_galore_projection, scale_by_learning_rate, scale_by_sophia_h,
    scale_by_step_size_ratio, stateless, decoupled_weight_decay as decay_after_lr,
)
from gradtx.optim._grads import checked_grad, is_closure, takes_argument
from gradtx.optim._declare import check_betas, check_lr, check_non_negative
from gradtx.optim._optimizer import Optimizer, number

# pytorch-optimizer's Kron.eps: the floor of its factor updates (the smallest normal bfloat16), kept as an attribute
_KRON_EPS = float(jnp.finfo(jnp.bfloat16).tiny)

__all__ = ["GaLore", "SophiaH", "Kron"]


def check_pytorch_optimizer_ranges(group: dict[str, Any], non_negative: tuple[str, ...]) -> None:
    """pytorch-optimizer's checks of ``lr``, ``betas`` and non-negative options, in its words."""
    check_lr(group["lr"])
    check_betas(group)
    check_non_negative(group, *non_negative)


def decay_after_step(factor: Any) -> GradientTransformation:
    """Shrinks the *updated* parameters by ``1 - factor``: pytorch-optimizer's ``p.mul_(1 - lr*wd)`` after ``p.add_``.

    Written as an update: ``(p + u)(1 - factor) - p``.
    """
    return stateless(lambda updates, params: jax.tree.map(
        lambda u, p: ((p + u) * (1 - factor) - p).astype(u.dtype), updates, params))


NOT_PROJECTED = "not projected"  # galore_chain's rank when the group gives none (rank=None means full rank)


def galore_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), weight_decay: Any = 0.0, eps: Any = 1e-6,
                 rank: int | None | str = NOT_PROJECTED, update_proj_gap: Any = 50, scale: Any = 1.0,
                 projection_type: str = "std", step: Any = None, use_weight_decay: bool | None = None
                 ) -> GradientTransformation:
    """pytorch-optimizer's GaLore step for one parameter: projected Adam, the step size, decay after the step.

    ``m/(sqrt(v) + eps)`` of the (projected) gradient, projected back, times
    ``lr * sqrt(1 - beta2^t) / (1 - beta1^t)`` with ``t`` the group's ``step`` (None:
    the chain's own count); then the parameter is multiplied by ``1 - lr * weight_decay``.
    A ``rank`` (an int, or None for full rank) projects 2-D parameters with
    :func:`gradtx.scale_by_galore_projection`.
    """
    b1, b2 = betas
    direction = scale_by_adam(b1, b2, eps, bias_correction_mu=False, bias_correction_nu=False)
    if rank != NOT_PROJECTED:
        direction = scale_by_galore_projection(direction, rank, update_proj_gap, scale, projection_type, step)
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    return chain(
        direction,
        scale_by_step_size_ratio(b1, b2, step),
        scale_by_learning_rate(lr),
        decay_after_step(lr * weight_decay) if use_weight_decay else identity(),
    )


class _GroupStep:
    """pytorch-optimizer's group-level step count and in-place maximize, for the declarations below."""

    maximize: bool

    def _check_real(self, p: Any) -> None:
        if jnp.iscomplexobj(p.data):
            raise TypeError(f"{type(self).__name__} does not support complex parameters, as pytorch-optimizer's "
                            f"does not: {self._describe(p)} is {p.dtype}; optimize its real and imaginary parts "
                            "as a real array (e.g. jnp.stack([z.real, z.imag], -1))")

    def _update(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._check_real(p)
        skipped = self.skipped_steps
        previous = [group.get("step", 0) for group in self.param_groups]
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            if self.maximize:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad = -p.grad
        super()._update()
        if self.skipped_steps != skipped:  # a skipped step leaves the counts as they were
            for group, step in zip(self.param_groups, previous):
                group["step"] = step

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), **{name: getattr(self, name) for name in self._attributes}}


class GaLore(_GroupStep, Optimizer):
    r"""pytorch-optimizer's ``GaLore``: AdamW with low-rank gradient projection (https://arxiv.org/abs/2403.03507).

    .. math::
        R_t = P_t^\top G_t \ \text{or}\ G_t Q_t^\top, \quad m_t = \beta_1 m_{t-1} + (1-\beta_1) R_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) R_t^2, \\
        \theta_t = \Bigl(\theta_{t-1} - \gamma\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
        s\,\mathrm{back}\bigl(\tfrac{m_t}{\sqrt{v_t} + \epsilon}\bigr)\Bigr)(1 - \gamma\lambda)

    As in pytorch-optimizer 4.1.0, projection is switched on per param group by
    giving ``rank`` (with ``update_proj_gap``, ``scale`` and ``projection_type``,
    which land in the group as extra keywords): the group's 2-D parameters are
    projected (:func:`gradtx.scale_by_galore_projection`; ``projection_type`` ``"full"``
    is not supported), the others take the plain step. ``t`` is the group's
    ``step``. ``opt.state[p]`` holds ``exp_avg`` and ``exp_avg_sq`` (projected
    shapes) and, for projected parameters, ``projector``: the array
    pytorch-optimizer's ``GaLoreProjector`` object keeps as ``ortho_matrix``. The
    SVD runs in float32 in any dtype, as pytorch-optimizer's does.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
      weight_decay: decoupled decay :math:`\lambda`, applied after the step (default 0).
      eps: :math:`\epsilon`, added to :math:`\sqrt{v_t}` (default 1e-6).
      maximize: maximize the objective (negates each ``p.grad`` in place).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      **kwargs: group options: ``rank`` (int or None: all singular vectors),
        ``update_proj_gap``, ``scale``, ``projection_type``.
    """

    chain_builder = staticmethod(galore_chain)
    chain_options = ("lr", "betas", "weight_decay", "eps", "rank", "update_proj_gap", "scale", "projection_type")
    group_options = ("step",)
    switches = ('weight_decay',)
    state_names = {"projector": "projector", "exp_avg": "mu", "exp_avg_sq": "nu"}
    step_name = None  # pytorch-optimizer counts steps per group (group["step"])
    static_options = ("rank",)
    complex_as_real = False
    _attributes = ("maximize",)

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[Any, Any] = (0.9, 0.999),
                 weight_decay: float = 0.0, eps: float = 1e-6, maximize: bool = False,
                 foreach: bool | None = None, **kwargs: Any) -> None:
        self.maximize = maximize
        defaults = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay, "eps": eps, "foreach": foreach,
                    **kwargs}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_pytorch_optimizer_ranges(group, ("weight_decay", "eps"))
        if "rank" in group:
            missing = [k for k in ("update_proj_gap", "scale", "projection_type") if k not in group]
            if missing:
                raise KeyError(f"a GaLore group with a rank also needs {missing} (pytorch-optimizer reads them at "
                               "the first step); pass e.g. update_proj_gap=200, scale=0.25, projection_type='std'")
            galore_side((2, 1), group["projection_type"])


def sophia_h_chain(lr: Any = 6e-2, betas: Any = (0.96, 0.99), weight_decay: Any = 0.0, weight_decouple: bool = True,
                   fixed_decay: bool = False, p: Any = 1e-2, eps: Any = 1e-12, update_hessian: Any = 1.0,
                   use_weight_decay: bool | None = None) -> GradientTransformation:
    """pytorch-optimizer's SophiaH step for one parameter: weight decay, :func:`gradtx.scale_by_sophia_h`, ``-lr``.

    Decoupled decay is ``p.mul_(1 - lr * wd)`` (``1 - wd`` with ``fixed_decay``)
    before the step; coupled decay adds ``wd * p`` to the gradient.
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    if not use_weight_decay:
        decoupled = coupled = identity()
    elif weight_decouple:
        decoupled, coupled = decay_after_lr(weight_decay, 1.0 if fixed_decay else lr), identity()
    else:
        decoupled, coupled = identity(), add_decayed_weights(weight_decay)
    return chain(coupled, scale_by_sophia_h(betas, eps, p, update_hessian), scale_by_learning_rate(lr), decoupled)


class SophiaH(_GroupStep, Optimizer):
    r"""pytorch-optimizer's ``SophiaH``: Sophia with Hutchinson's Hessian estimate (https://arxiv.org/abs/2305.14342).

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        h_t = \beta_2 h_{t-1} + (1-\beta_2)\,\hat H_t \ \text{(at steps } 1, k+1, 2k+1, \dots), \\
        \theta_t = \theta_{t-1} - \gamma\,\operatorname{clip}\bigl(m_t / \max(h_t, \epsilon), -p, p\bigr),
        \qquad \hat H_t = \frac1S \sum_{s=1}^S z_s \odot (\nabla^2 f\, z_s)

    Every ``update_period`` steps (and at the first) the Hessian diagonal is
    estimated from ``num_samples`` probes :math:`z` (``"gaussian"`` or
    ``"rademacher"``), by forward-over-reverse differentiation of the loss: so
    pass ``step(closure=loss_fn)`` with ``loss_fn(params) -> loss`` (torch needs
    ``loss.backward(create_graph=True)`` instead), or give the estimates with
    ``step(grads, hessian=[...])`` (one array per parameter, in ``param_groups``
    order), as pytorch-optimizer's ``step(hessian=...)``. The probes come from
    JAX's PRNG (``opt.hessian_key``, from ``seed``), not torch's, so runs agree
    with pytorch-optimizer's only given the same probes. ``opt.state[p]`` holds
    ``momentum``, ``hessian_moment`` and ``hessian`` (the latest estimate).

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 6e-2).
      betas: :math:`(\beta_1, \beta_2)` (default (0.96, 0.99)).
      weight_decay: the decay rate (default 0).
      weight_decouple: decoupled decay (``p *= 1 - lr*wd`` before the step) instead of L2.
      fixed_decay: decoupled decay not scaled by the learning rate.
      p: the clipping bound of the preconditioned step (default 1e-2).
      update_period: steps between Hessian estimates (default 10).
      num_samples: probes per estimate (default 1).
      hessian_distribution: ``"gaussian"`` (default) or ``"rademacher"``.
      eps: the floor of :math:`h_t` (default 1e-12).
      maximize: maximize the objective (negates each ``p.grad`` in place).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      seed: the seed of ``opt.hessian_key`` (beyond pytorch-optimizer).
    """

    chain_builder = staticmethod(sophia_h_chain)
    chain_options = ("lr", "betas", "weight_decay", "weight_decouple", "fixed_decay", "p", "eps")
    group_options = ("update_hessian",)
    switches = ('weight_decay',)
    state_names = {"momentum": "momentum", "hessian_moment": "hessian_moment", "hessian": "hessian"}
    step_name = None  # pytorch-optimizer counts steps per group (group["step"])
    complex_as_real = False
    _attributes = ("maximize", "update_period", "num_samples", "distribution", "hessian_key")

    def __init__(self, params: Any, lr: Any = 6e-2, betas: tuple[Any, Any] = (0.96, 0.99), weight_decay: float = 0.0,
                 weight_decouple: bool = True, fixed_decay: bool = False, p: float = 1e-2, update_period: int = 10,
                 num_samples: int = 1, hessian_distribution: str = "gaussian", eps: float = 1e-12,
                 maximize: bool = False, foreach: bool | None = None, *, seed: int = 0, **kwargs: Any) -> None:
        if update_period < 1:
            raise ValueError(f"update_period must be positive. ({update_period} > 0)")
        if num_samples <= 0:
            raise ValueError("num_samples must be positive")
        if hessian_distribution not in ("gaussian", "rademacher"):
            raise ValueError(f"hessian_distribution {hessian_distribution} must be one of ('gaussian' or 'rademacher')")
        self.update_period, self.num_samples, self.distribution = update_period, num_samples, hessian_distribution
        self.maximize = maximize
        self.hessian_key = np.asarray(jax.random.PRNGKey(seed))
        defaults = {"lr": lr, "foreach": foreach, "betas": tuple(betas), "weight_decay": weight_decay,
                    "weight_decouple": weight_decouple, "fixed_decay": fixed_decay, "p": p, "eps": eps}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_pytorch_optimizer_ranges(group, ("weight_decay",))
        if number(group["p"]) < 0.0:
            raise ValueError("p (gradient clip) must be non-negative")
        if number(group["eps"]) < 0.0:
            raise ValueError("eps must be non-negative")

    def step(self, grads: Any = None, closure: Any = None, hessian: list | None = None) -> Any:
        """One step; the closure ``loss_fn(params) -> loss`` also gives the Hessian estimate when one is due.

        Args:
          grads: gradients in the structure of ``opt.params`` (or set ``p.grad``).
          closure: ``closure(params) -> loss``, differentiated with JAX.
          hessian: Hessian-diagonal estimates, one per parameter in ``param_groups`` order.
        """
        if closure is None and is_closure(grads):  # the closure is evaluated again for the Hessian estimate
            grads, closure = None, grads
        loss = self._take_gradients(grads, closure)
        for p in (p for g in self.param_groups for p in g["params"] if p.grad is not None):
            self._check_real(p)  # before the Hessian estimate is stored
        update_hessian = hessian is not None or self.param_groups[0].get("step", 0) % self.update_period == 0
        if hessian is not None:
            self._store_hessian(hessian, [p for g in self.param_groups for p in g["params"]])
        elif update_hessian:
            self._estimate_hessian(closure)
        for group in self.param_groups:
            group["update_hessian"] = float(update_hessian)
        try:
            self._update()
        finally:
            for group in self.param_groups:
                group.pop("update_hessian", None)
        return loss

    def _store_hessian(self, hessian: list, params: list) -> None:
        for p, h in zip(params, hessian, strict=True):
            if tuple(np.shape(h)) != p.shape:
                raise ValueError(f"the shape of parameter and hessian does not match. {p.shape} vs {np.shape(h)}")
            state = self.state[p]  # a view: the entries may live in a store (gradtx.optim._stores)
            if not state:  # pytorch-optimizer's order: the moments first, then the estimate
                state.update(momentum=jnp.zeros_like(p.data), hessian_moment=jnp.zeros_like(p.data))
            state["hessian"] = jnp.asarray(h, p.dtype)

    def _probes(self, arrays: list) -> list:
        """One probe per array: standard normal or Rademacher, from ``hessian_key`` (split once per probe set)."""
        key, sample = jax.random.split(jnp.asarray(self.hessian_key))
        self.hessian_key = np.asarray(key)
        keys = jax.random.split(sample, len(arrays))
        if self.distribution == "rademacher":
            return [jax.random.rademacher(k, a.shape, jnp.int32).astype(a.dtype) for k, a in zip(keys, arrays)]
        return [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, arrays)]

    def _estimate_hessian(self, closure: Any) -> None:
        if closure is None or not takes_argument(closure):
            raise RuntimeError(f"SophiaH estimates the Hessian at step 1 and every {self.update_period} steps from "
                               "the loss: pass step(closure=loss_fn) with loss_fn(params) -> loss, or give the "
                               "estimates with step(grads, hessian=[...])")
        boxes = [p for g in self.param_groups for p in g["params"]]
        active = [p.grad is not None for p in boxes]
        cached = self.__dict__.get("_hutchinson")
        if cached is None or cached[0] is not closure:  # one compiled Hessian-vector product per loss function
            value_and_grad = self._value_and_grad(closure)
            program = jax.jit(lambda arrays, probes: jax.jvp(lambda a: value_and_grad(a)[1], (arrays,), (probes,))[1])
            self._hutchinson = cached = (closure, program)
        hutchinson = cached[1]

        arrays = [p.data for p in boxes]
        estimate = [jnp.zeros_like(a) for a in arrays]
        for _ in range(self.num_samples):
            drawn = iter(self._probes([a for a, on in zip(arrays, active) if on]))
            probes = [next(drawn) if on else jnp.zeros_like(a) for a, on in zip(arrays, active)]
            products = hutchinson(arrays, probes)
            estimate = [e + hz * z / self.num_samples for e, hz, z in zip(estimate, products, probes)]
        self._store_hessian([e for e, on in zip(estimate, active) if on], [p for p, on in zip(boxes, active) if on])


def _dtype(value: Any) -> Any:
    """A dtype option given as a torch dtype (``torch.float64``), a NumPy/JAX dtype or a name; None stays None."""
    if value is None:
        return None
    text = str(value)
    return jnp.dtype(text[len("torch."):] if text.startswith("torch.") else value)


def _dtype_name(value: Any) -> str | None:
    return None if value is None else _dtype(value).name


@functools.partial(jax.jit, static_argnames=("expressions", "momentum_into_precondition_update",
                                             "precondition_dtype", "decoupled"))
def _kron_param_step(param, grad, mu, qs, probe, do_update, balance, lr, momentum, weight_decay, precondition_lr,
                     bias_correction, *, expressions, momentum_into_precondition_update, precondition_dtype,
                     decoupled):
    expressions = (expressions[0], list(expressions[1]), expressions[2])
    direction, mu, qs = kron_leaf_step(mu, qs, grad, probe, do_update, balance, bias_correction, b1=momentum,
                                       expressions=expressions, precondition_lr=precondition_lr,
                                       momentum_into_precondition_update=momentum_into_precondition_update,
                                       precondition_dtype=precondition_dtype)
    if decoupled:
        direction = direction + weight_decay * param
    return (param - lr * direction).astype(param.dtype), mu, qs


class Kron(_GroupStep, Optimizer):
    r"""pytorch-optimizer's ``Kron``: PSGD with Kronecker-factored preconditioners (https://arxiv.org/abs/1512.04202).

    .. math::
        m_t = \beta m_{t-1} + (1-\beta) g_t, \quad u_t = \mathrm{clip}_{\mathrm{rms} \le 1.1}\bigl(Q^H Q\,
        m_t / (1-\beta^t)\bigr), \quad \theta_t = \theta_{t-1} - \gamma (u_t + \lambda \theta_{t-1})

    The factors :math:`Q` fit the preconditioner by PSGD on Gaussian probes when
    the steps since their last move reach ``1 / pre_conditioner_update_probability``
    (see :func:`gradtx.scale_by_kron`), counted in the first group's
    ``update_counter``; weight decay (decoupled, or added to the gradient) applies
    to parameters of 2 or more dimensions only. ``opt.state[p]`` holds
    ``momentum_buffer``, ``Q`` (the list of factors) and ``expressions`` (the einsum
    strings), as pytorch-optimizer's. The probes come from JAX's PRNG
    (``opt.probe_key``, from ``seed``) and the balancing draw from NumPy's
    generator seeded alike, so runs agree with pytorch-optimizer's only given the
    same probes. This optimizer steps each parameter in its own compiled update.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      momentum: :math:`\beta` (default 0.9).
      weight_decay: :math:`\lambda` (default 0).
      weight_decouple: decoupled decay (else added to the gradient).
      pre_conditioner_update_probability: a number, a callable of the step, or None
        (:func:`gradtx.kron_update_probability`).
      max_size_triangular: dimensions above this keep a diagonal factor (default 8192).
      min_ndim_triangular: parameters of fewer dimensions keep diagonal factors (default 2).
      memory_save_mode: None, ``"one_diag"``, ``"smart_one_diag"`` or ``"all_diag"``.
      momentum_into_precondition_update: fit the factors to the momentum (else the gradient).
      mu_dtype: the momentum's dtype (None: the parameter's); torch dtypes are read by name.
      precondition_dtype: the factors' dtype (default float32, as pytorch-optimizer's; None: the
        parameter's); kept in the group by name (``"float32"``), which state dicts can hold.
      balance_prob: the probability of rebalancing the factors when they move.
      maximize: maximize the objective (negates each ``p.grad`` in place).
      seed: the seed of the probes and of the balancing draw (beyond pytorch-optimizer).
    """

    chain_builder = None  # steps itself (its own _step)
    step_name = None
    _attributes = ("maximize", "balance_prob", "eps", "probe_key", "_balance_rng")

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 weight_decouple: bool = True, pre_conditioner_update_probability: Any = None,
                 max_size_triangular: int = 8192, min_ndim_triangular: int = 2, memory_save_mode: str | None = None,
                 momentum_into_precondition_update: bool = True, mu_dtype: Any = None,
                 precondition_dtype: Any = jnp.float32, balance_prob: float = 0.01, maximize: bool = False, *,
                 seed: int = 0, **kwargs: Any) -> None:
        self.balance_prob, self.eps, self.maximize = balance_prob, _KRON_EPS, maximize
        self.probe_key = np.asarray(jax.random.PRNGKey(seed))
        self._balance_rng = np.random.default_rng(seed)
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "weight_decouple": weight_decouple,
                    "pre_conditioner_update_probability": pre_conditioner_update_probability,
                    "max_size_triangular": max_size_triangular, "min_ndim_triangular": min_ndim_triangular,
                    "memory_save_mode": memory_save_mode,
                    "momentum_into_precondition_update": momentum_into_precondition_update,
                    "precondition_lr": 1e-1, "precondition_init_scale": 1.0, "mu_dtype": _dtype_name(mu_dtype),
                    "precondition_dtype": _dtype_name(precondition_dtype)}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        if not 0.0 <= number(group["momentum"]) < 1.0:
            raise ValueError("momentum must be in the range [0.0, 1.0)")
        check_non_negative(group, "weight_decay")

    def check_loaded_state(self, p: Any, entry: dict[str, Any], where: str) -> None:
        """pytorch-optimizer's Kron entries: the factors' shapes and the einsum strings this parameter needs."""
        if not entry:
            return
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        qs, expressions = init_kron_factors(p.shape, 1.0, group["max_size_triangular"], group["min_ndim_triangular"],
                                            group["memory_save_mode"])
        factors = entry.get("Q")
        if not isinstance(factors, (list, tuple)) or [np.shape(q) for q in factors] != [q.shape for q in qs]:
            raise ValueError(f"{where}: 'Q' must be a list of factors of shapes {[q.shape for q in qs]}")
        loaded = entry.get("expressions")
        if not isinstance(loaded, (list, tuple)) or len(loaded) != 3 or \
                (loaded[0], list(loaded[1]), loaded[2]) != expressions:
            raise ValueError(f"{where}: 'expressions' must be {expressions}")
        if np.shape(entry.get("momentum_buffer")) != p.shape:
            raise ValueError(f"{where}: 'momentum_buffer' must have shape {p.shape}")

    def _probe(self, shape: tuple, dtype: Any) -> jax.Array:
        """A standard normal probe, from ``probe_key`` (split once per probe)."""
        key, sample = jax.random.split(jnp.asarray(self.probe_key))
        self.probe_key = np.asarray(key)
        return jax.random.normal(sample, shape, dtype)

    def _balance_draw(self) -> float:
        return float(self._balance_rng.random())

    def _step(self, grads: Any = None, closure: Any = None) -> Any:
        loss = self._take_gradients(grads, closure)
        first = self.param_groups[0]
        prob = first["pre_conditioner_update_probability"]
        if prob is None:
            prob = kron_update_probability(first.get("step", 0))
        elif callable(prob):
            prob = prob(first.get("step", 0))
        prob = np.float32(prob) if isinstance(prob, (jax.Array, np.ndarray, np.generic)) else prob
        counter = first.get("update_counter", 0) + 1
        do_update = bool(prob > 0 and counter >= 1 / prob)
        first["update_counter"] = 0 if do_update else counter
        balance = self._balance_draw() < self.balance_prob and do_update
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            for p in group["params"]:
                if p.grad is not None:
                    self._kron_update(group, p, do_update, balance)
        return loss

    def _kron_update(self, group: dict[str, Any], p: Any, do_update: bool, balance: bool) -> None:
        self._check_real(p)
        grad = checked_grad(self, p, p.grad)
        if self.maximize:
            grad = p.grad = -grad
        wd = number(group["weight_decay"])
        if p.ndim >= 2 and not group["weight_decouple"] and wd > 0:
            grad = grad + wd * p.data
        precondition_dtype = _dtype(group["precondition_dtype"]) or p.dtype
        state = self._state[p]
        if not state:
            qs, expressions = init_kron_factors(p.shape, group["precondition_init_scale"],
                                                group["max_size_triangular"], group["min_ndim_triangular"],
                                                group["memory_save_mode"], precondition_dtype)
            state.update(momentum_buffer=jnp.zeros(p.shape, _dtype(group["mu_dtype"]) or p.dtype), Q=qs,
                         expressions=expressions)
        expressions = state["expressions"]
        probe = self._probe(p.shape, precondition_dtype) if do_update else jnp.zeros(p.shape, precondition_dtype)
        momentum = number(group["momentum"])
        p.data, state["momentum_buffer"], state["Q"] = _kron_param_step(
            p.data, grad, state["momentum_buffer"], list(state["Q"]), probe, do_update, balance,
            number(group["lr"]), momentum, wd, number(group["precondition_lr"]),
            1.0 - math.pow(momentum, group["step"]),
            expressions=(expressions[0], tuple(expressions[1]), expressions[2]),
            momentum_into_precondition_update=bool(group["momentum_into_precondition_update"]),
            precondition_dtype=precondition_dtype, decoupled=bool(wd != 0 and p.ndim >= 2 and group["weight_decouple"]))
