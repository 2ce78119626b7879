"""Parity cases for optax.contrib's optimizers: gradtx.<name> against optax.contrib.<name>.

CONTRIB_CASES call both with the same arguments. WRAPPER_CASES wrap other
optimizers, so each builds its chain from its own library: ``build(top, contrib)``
gets (gradtx, gradtx) or (optax, optax.contrib).
"""

from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp

from tests.harness import OptaxCase, grad_fn, loss


def _loss_value(params, grads):
    del grads
    return dict(value=loss(params))


def _grad_fn(params, grads):
    del grads
    return dict(grad_fn=lambda p, i: grad_fn(p))


def _warmup(count):
    return jnp.minimum(1.0, (count + 1) / 4)


def _only_matrices(params):
    return {k: k == "w" for k in params}


CONTRIB_CASES = [
    OptaxCase("dadapt_adamw", {}, label="dadapt_adamw-defaults"),
    OptaxCase("dadapt_adamw", dict(learning_rate=_warmup, betas=(0.8, 0.99), eps=1e-6, estim_lr0=1e-3,
                                   weight_decay=0.1), dtypes=("float64",),
              label="dadapt_adamw-warmup,betas,eps,estim_lr0,weight_decay"),
    OptaxCase("madgrad", dict(learning_rate=0.05)),
    OptaxCase("madgrad", dict(learning_rate=_warmup, momentum=0.5, weight_decay=0.1, eps=1e-4),
              dtypes=("float64",), label="madgrad-warmup,momentum,weight_decay,eps"),
    OptaxCase("cocob", {}, label="cocob-defaults"),
    OptaxCase("cocob", dict(learning_rate=0.5, alpha=10.0, eps=1e-4, weight_decay=0.1, mask=_only_matrices),
              dtypes=("float64",), label="cocob-lr,alpha,eps,weight_decay,mask"),
    OptaxCase("dog", {}, label="dog-defaults"),
    OptaxCase("dog", dict(learning_rate=0.5, init_step=("distance", 0.1), eps=1e-6, weight_decay=0.01),
              dtypes=("float64",)),
    OptaxCase("dog", dict(init_step=("learning_rate", 0.05), mask=_only_matrices, weight_decay=0.1),
              dtypes=("float64",), label="dog-init_step=learning_rate,mask,weight_decay"),
    OptaxCase("dowg", {}, label="dowg-defaults"),
    OptaxCase("dowg", dict(learning_rate=0.5, init_estim_sq_dist=0.1, eps=1e-3, weight_decay=0.01),
              dtypes=("float64",)),
    OptaxCase("momo", dict(learning_rate=0.1), extra_args=_loss_value),
    # the loss of make_params' problem is negative, so a lower bound below it matters, and adapting it too
    OptaxCase("momo", dict(learning_rate=_warmup, beta=0.8, lower_bound=-20.0, weight_decay=0.1,
                           adapt_lower_bound=True), extra_args=_loss_value,
              dtypes=("float64",), label="momo-warmup,beta,lower_bound,weight_decay,adapt_lower_bound"),
    OptaxCase("momo_adam", {}, extra_args=_loss_value, label="momo_adam-defaults"),
    OptaxCase("momo_adam", dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-6, lower_bound=-20.0,
                                weight_decay=0.1, adapt_lower_bound=True), extra_args=_loss_value,
              dtypes=("float64",)),
    OptaxCase("acprop", dict(learning_rate=0.05)),
    OptaxCase("acprop", dict(learning_rate=_warmup, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10, weight_decay=0.1,
                             mask=_only_matrices), dtypes=("float64",),
              label="acprop-warmup,b1,b2,eps,eps_root,weight_decay,mask"),
    OptaxCase("scale_by_acprop", dict(b1=0.5), steps=4, dtypes=("float64",)),
    OptaxCase("scale_by_madgrad", dict(learning_rate=0.02), steps=6, dtypes=("float64",)),
    OptaxCase("scale_by_cocob", dict(alpha=50.0), steps=6, dtypes=("float64",)),
]


@dataclass(frozen=True)
class WrapperCase:
    """A contrib wrapper around other optimizers, built by each library from its own pieces."""

    label: str
    build: Callable[[Any, Any], Any]  # (top-level module, contrib module) -> transformation
    steps: int = 12
    extra_args: Callable[[Any, Any], dict] | None = None
    dtypes: tuple = ("float64",)

    @property
    def id(self) -> str:
        return self.label


WRAPPER_CASES = [
    WrapperCase("sam-sgd,normalize", lambda t, c: c.sam(t.sgd(0.05), t.chain(c.normalize(), t.sgd(0.05))),
                dtypes=("float64", "float32")),
    WrapperCase("sam-adam,sync_period=3,reset_state=False",
                lambda t, c: c.sam(t.adam(0.05), t.adam(0.01), sync_period=3, reset_state=False)),
    WrapperCase("sam-opaque", lambda t, c: c.sam(t.sgd(0.05), t.chain(c.normalize(), t.sgd(0.05)), sync_period=3,
                                                 opaque_mode=True), extra_args=_grad_fn),
    WrapperCase("normalize", lambda t, c: t.chain(c.normalize(), t.sgd(0.05))),
    WrapperCase("mechanize-adam", lambda t, c: c.mechanize(t.adam(0.01)), dtypes=("float64", "float32")),
    WrapperCase("mechanize-sgd,weight_decay,eps,s_init,num_betas",
                lambda t, c: c.mechanize(t.sgd(0.05), weight_decay=0.0, eps=1e-6, s_init=1e-3, num_betas=3)),
    WrapperCase("mechanize-momo", lambda t, c: c.mechanize(c.momo(0.1)), extra_args=_loss_value),
]

OPTAX_CASES: list = []  # optax has these under optax.contrib: see tests/test_contrib.py
TORCH_CASES: list = []
