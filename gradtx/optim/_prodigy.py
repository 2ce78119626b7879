"""prodigyopt's Prodigy in the facade (its step: :mod:`gradtx.optim._prodigy_runs`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import ProdigyState
from gradtx.optim._declare import check_torch_ranges
from gradtx.optim._optimizer import Optimizer, number
from gradtx.optim._prodigy_runs import prodigy_step
from gradtx.optim._step import owned, program_limit

__all__ = ["Prodigy"]


def _initial_entry(x: Any) -> dict[str, Any]:
    """A parameter's entries before its first step: zero moments and sums, and the parameter as its ``p0``
    (``s`` and ``p0`` flattened, as prodigyopt keeps them; the step's programs reshape them)."""
    return {"exp_avg": jnp.zeros_like(x), "exp_avg_sq": jnp.zeros_like(x), "s": jnp.zeros(x.size, x.dtype),
            "p0": x.reshape(-1)}


def _in_dtype(array: Any, dtype: Any) -> Any:
    """``array`` in ``dtype`` (converted only when it differs: ``astype`` costs microseconds in Python even then)."""
    return array if array.dtype == dtype else array.astype(dtype)


class Prodigy(Optimizer):
    r"""prodigyopt.Prodigy (Mishchenko & Defazio, 2023, https://arxiv.org/abs/2306.06101): Adam, learning its step size.

    The step is :func:`gradtx.prodigy` with ``bias_correction=use_bias_correction`` and
    ``decouple=decouple`` over all parameters (the estimate :math:`d` is one number for the
    whole model), run as programs over runs of ``opt.program_max_params`` alike parameters
    (:mod:`gradtx.optim._prodigy_runs`), so thousands of parameters compile a few small
    programs. The same numbers as ``prodigyopt.Prodigy`` 1.1.2 with ``betas[0] > 0``; the param
    groups hold ``d``, ``d0``, ``d_max``, ``d_numerator``, ``k`` (and, after a step, ``d_denom``
    and ``d_hat``) as prodigyopt's do, and ``opt.state[p]`` holds ``step``, ``s``, ``p0``
    (flattened, as prodigyopt keeps them), ``exp_avg`` and ``exp_avg_sq``.

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
      foreach: accepted and ignored (the step's programs are the same in every tier).
    """

    chain_builder = None  # steps itself (its own _step)
    step_name = None

    def __init__(self, params: Any, lr: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, eps: float = 1e-8, weight_decay: float = 0, decouple: bool = True,
                 use_bias_correction: bool = False, safeguard_warmup: bool = False, d0: float = 1e-6,
                 d_coef: float = 1.0, growth_rate: float = float("inf"), fsdp_in_use: bool = False,
                 slice_p: int = 1, *, foreach: bool | None = None) -> None:
        del foreach  # the facade's tier option; Prodigy's step runs the same programs in every tier
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
        shapes = {"s": [(p.size,)], "p0": [(p.size,), (1,)], "exp_avg": [tuple(p.shape)],
                  "exp_avg_sq": [tuple(p.shape)]}
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
        params = [p.data for p in boxes]
        entries = [self.state.get(p) or _initial_entry(x) for p, x in zip(boxes, params)]
        dtype = params[0].dtype
        # The programs reuse the buffers only the optimizer holds (copies of the others, see _step.owned), so that
        # memory does not double; the moments' only when every parameter has d's dtype (the moments' new dtype).
        uniform = all(x.dtype == dtype for x in params)
        moments = [[e[key] for e in entries] for key in ("exp_avg", "exp_avg_sq", "s")]
        exp_avg, exp_avg_sq, grad_sum = map(owned, moments) if uniform else moments
        state = ProdigyState(
            exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, grad_sum=grad_sum, params0=[e["p0"] for e in entries],
            estim_lr=jnp.asarray(group["d"], dtype), numerator_weighted=jnp.asarray(group["d_numerator"], dtype),
            count=jnp.asarray(group["k"], jnp.int32))
        donate_params = bool(self.donate_params)
        if donate_params:
            params = owned(params)
        del moments, exp_avg, exp_avg_sq, grad_sum
        new_params, state, d_denom, d_hat = prodigy_step(group, params, [p.grad for p in boxes], state,
                                                         program_limit(self.program_max_params),
                                                         donate_state=uniform, donate_params=donate_params)
        for p, x, data, entry, m, v, s in zip(boxes, params, new_params, entries, state.exp_avg, state.exp_avg_sq,
                                              state.grad_sum):
            p.data = data
            # Kept in the parameter's dtype, as prodigyopt's in-place updates keep them (d may be wider).
            self.state[p] = {"step": entry.get("step", 0) + 1, "s": s, "p0": entry["p0"],  # p0: as prodigyopt's
                             "exp_avg": _in_dtype(m, x.dtype), "exp_avg_sq": _in_dtype(v, x.dtype)}
        numerator, d_denom, d, d_hat = map(float, jax.device_get((state.numerator_weighted, d_denom, state.estim_lr,
                                                                   d_hat)))
        for g in self.param_groups:
            g.update(d_numerator=numerator, d_denom=d_denom, d=d, d_max=d, d_hat=d_hat, k=g["k"] + 1)
        return loss
