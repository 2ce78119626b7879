"""Optimizers from ``optax.contrib`` as chains, with optax 0.2.8's names, arguments, defaults and numbers.

schedule_free_adamw, schedule_free_sgd (see also :func:`gradtx.schedule_free`), adopt,
ademamix, simplified_ademamix. The torch-style classes of the reference packages
(``schedulefree``, ``pytorch_optimizer``) are :class:`gradtx.optim.AdamWScheduleFree`, :class:`gradtx.optim.ADOPT`,
:class:`gradtx.optim.AdEMAMix` and the others in :mod:`gradtx.optim`.
"""


from typing import Any

from gradtx._aliases.core import sgd
from gradtx._base import GradientTransformation, ScalarOrSchedule, chain
from gradtx._schedules.optax_style import warmup_constant_schedule
from gradtx._transforms.accumulators import scale_by_rms
from gradtx._transforms.beyond import _adopt_clip, scale_by_ademamix, scale_by_adopt, scale_by_simplified_ademamix
from gradtx._transforms.decay import add_decayed_weights
from gradtx._transforms.scaling import scale_by_learning_rate
from gradtx._transforms.schedule_free import schedule_free

__all__ = ["adopt", "ademamix", "schedule_free_adamw", "schedule_free_sgd", "simplified_ademamix"]


def _warmed_up(learning_rate: Any, warmup_steps: int | None) -> Any:
    if warmup_steps is None:
        return learning_rate
    return warmup_constant_schedule(init_value=0, peak_value=learning_rate, warmup_steps=warmup_steps)


def schedule_free_sgd(learning_rate: Any = 1.0, warmup_steps: int | None = None, b1: Any = 0.9,
                      weight_decay: Any = None, weight_lr_power: Any = 2.0,
                      state_dtype: Any = None) -> GradientTransformation:
    """Schedule-Free SGD (``optax.contrib.schedule_free_sgd``): :func:`gradtx.schedule_free` around ``sgd``.

    Defazio et al., The Road Less Scheduled, 2024, https://arxiv.org/abs/2405.15682.

    Args:
      learning_rate: SGD's learning rate.
      warmup_steps: length of a linear warmup from 0 (none by default).
      b1: :math:`\\beta_1`, the interpolation weight (positive).
      weight_decay: L2 decay added to the gradient (scaled by the learning rate), or None.
      weight_lr_power: power of the largest learning rate in the averaging weights.
      state_dtype: dtype of the :math:`z` sequence.

    Returns:
      A GradientTransformation; evaluate at :func:`gradtx.schedule_free_eval_params`.
    """
    learning_rate = _warmed_up(learning_rate, warmup_steps)
    base = sgd(learning_rate)
    if weight_decay is not None:
        base = chain(add_decayed_weights(weight_decay), base)
    return schedule_free(base, learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power,
                         state_dtype=state_dtype)


def schedule_free_adamw(learning_rate: Any = 0.0025, warmup_steps: int | None = None, b1: Any = 0.9,
                        b2: Any = 0.999, eps: Any = 1e-8, weight_decay: Any = 0.0, weight_lr_power: Any = 2.0,
                        state_dtype: Any = None) -> GradientTransformation:
    """Schedule-Free AdamW (``optax.contrib.schedule_free_adamw``): :func:`gradtx.schedule_free` around AdamW.

    The base is Adam without momentum (``scale_by_rms`` with eps outside the root and
    bias correction), then decoupled decay at the current parameters and the
    learning rate. Defazio et al., 2024, https://arxiv.org/abs/2405.15682.

    Args:
      learning_rate: AdamW's learning rate.
      warmup_steps: length of a linear warmup from 0 (none by default).
      b1: :math:`\\beta_1`, the interpolation weight (positive).
      b2: decay rate of the second moment.
      eps: added to the root of the second moment.
      weight_decay: decoupled weight decay.
      weight_lr_power: power of the largest learning rate in the averaging weights.
      state_dtype: dtype of the :math:`z` sequence.

    Returns:
      A GradientTransformation; evaluate at :func:`gradtx.schedule_free_eval_params`.
    """
    learning_rate = _warmed_up(learning_rate, warmup_steps)
    base = chain(scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
                 add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))
    return schedule_free(base, learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power,
                         state_dtype=state_dtype)


def adopt(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.9999, eps: Any = 1e-6, mu_dtype: Any = None, *,
          nesterov: bool = False, use_clipping: bool = True, clip_value_fn: Any = _adopt_clip) -> GradientTransformation:
    """ADOPT (``optax.contrib.adopt``): :func:`gradtx.scale_by_adopt` then the learning rate.

    Taniguchi et al., ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate, 2024,
    https://arxiv.org/abs/2411.02853.

    Args:
      learning_rate: a number or a schedule.
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: floor of the denominator.
      mu_dtype: dtype of the first moment.
      nesterov: Nesterov's look-ahead.
      use_clipping: clip the normalised gradient.
      clip_value_fn: the clip bound as a function of the step count (default ``count**0.25``).

    Returns:
      A GradientTransformation.
    """
    return chain(scale_by_adopt(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nesterov=nesterov,
                                use_clipping=use_clipping, clip_value_fn=clip_value_fn),
                 scale_by_learning_rate(learning_rate))


def ademamix(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, b3: Any = 0.9999, alpha: Any = 5.0,
             eps: Any = 1e-8, eps_root: Any = 0.0, mu_dtype: Any = None, weight_decay: Any = 0.0,
             mask: Any = None) -> GradientTransformation:
    """AdEMAMix (``optax.contrib.ademamix``): :func:`gradtx.scale_by_ademamix`, decoupled decay, learning rate.

    Pagliardini et al., The AdEMAMix Optimizer: Better, Faster, Older, 2024, https://arxiv.org/abs/2409.03137.

    Args:
      learning_rate: a number or a schedule.
      b1, b2, b3, alpha, eps, eps_root, mu_dtype: as :func:`gradtx.scale_by_ademamix`.
      weight_decay: decoupled weight decay.
      mask: where to decay (a tree of bools or a function of the params).

    Returns:
      A GradientTransformation.
    """
    return chain(scale_by_ademamix(b1=b1, b2=b2, b3=b3, alpha=alpha, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype),
                 add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))


def simplified_ademamix(learning_rate: ScalarOrSchedule, b1: Any = 0.99, b2: Any = 0.95, alpha: Any = 0.0, eps: Any = 1e-8,
                        eps_root: Any = 0.0, weight_decay: Any = 0.0, mask: Any = None) -> GradientTransformation:
    """Simplified AdEMAMix (``optax.contrib.simplified_ademamix``).

    :func:`gradtx.scale_by_simplified_ademamix`, decoupled decay, learning rate. Morwani et al.,
    Connections between Schedule-Free Optimizers, AdEMAMix, and Accelerated SGD Variants, 2025,
    https://arxiv.org/abs/2502.02431.

    Args:
      learning_rate: a number or a schedule.
      b1: decay of the momentum.
      b2: decay of the second moment.
      alpha: weight of the current gradient (number or schedule).
      eps: added to the denominator.
      eps_root: added under the root.
      weight_decay: decoupled weight decay.
      mask: where to decay.

    Returns:
      A GradientTransformation.
    """
    return chain(scale_by_simplified_ademamix(b1=b1, b2=b2, alpha=alpha, eps=eps, eps_root=eps_root),
                 add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))
