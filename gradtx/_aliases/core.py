"""SGD and the Adam family as chains of transforms, with optax's names, arguments and defaults."""


from typing import Any

from gradtx._base import GradientTransformation, ScalarOrSchedule, chain, identity
from gradtx._transforms.moments import scale_by_adam, scale_by_amsgrad
from gradtx._transforms.decay import add_decayed_weights
from gradtx._transforms.momentum import trace
from gradtx._transforms.scaling import scale_by_learning_rate

__all__ = ["sgd", "adam", "adamw", "amsgrad"]


def sgd(learning_rate: ScalarOrSchedule, momentum: Any = None, nesterov: bool = False,
        accumulator_dtype: Any = None) -> GradientTransformation:
    """Stochastic gradient descent, with optional (Nesterov) momentum (``optax.sgd``).

    ``chain(trace(momentum, nesterov), scale_by_learning_rate(learning_rate))``;
    without ``momentum`` the trace is left out. For torch's dampening and
    first-step buffer see :func:`gradtx.trace` and ``gradtx.optim.SGD``.

    Example::

        tx = gradtx.sgd(0.1, momentum=0.9)
        state = tx.init(params)
        updates, state = tx.update(grads, state)
        params = gradtx.apply_updates(params, updates)
    """
    return chain(
        trace(momentum, nesterov, accumulator_dtype) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )


def adam(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0,
         mu_dtype: Any = None, *, nesterov: bool = False, nu_dtype: Any = None) -> GradientTransformation:
    """Adam (Kingma & Ba, 2015, https://arxiv.org/abs/1412.6980), as ``optax.adam``.

    ``chain(scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov), scale_by_learning_rate(lr))``.
    Beyond optax: every numeric argument may be a schedule, and ``nu_dtype`` (keyword-only)
    stores the second moment in its own dtype (see :func:`gradtx.scale_by_adam` for the numerics).
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adamw(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0,
          mu_dtype: Any = None, weight_decay: ScalarOrSchedule = 1e-4, mask: Any = None, *,
          nesterov: bool = False, nu_dtype: Any = None) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019, https://arxiv.org/abs/1711.05101), as ``optax.adamw``.

    The decay is added after Adam's rescaling and before the learning rate, so the
    step is ``-lr * (adam_direction + weight_decay * param)``, the same as
    ``torch.optim.AdamW``. ``nu_dtype`` (keyword-only, beyond optax): as in :func:`adam`.
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def amsgrad(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0,
            mu_dtype: Any = None, bias_correction_mu: bool = True,
            bias_correction_nu: bool = True, *, nu_dtype: Any = None) -> GradientTransformation:
    """AMSGrad (Reddi et al., 2018, https://openreview.net/forum?id=ryQu7f-RZ), as ``optax.amsgrad``.

    optax keeps the maximum of the *bias-corrected* second moment; torch's
    ``Adam(amsgrad=True)`` keeps the maximum of the raw one
    (``scale_by_adam(amsgrad=True, amsgrad_max_of="raw")``). ``nu_dtype`` (keyword-only,
    beyond optax) stores the second moment and its maximum in that dtype.
    """
    return chain(
        scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )
