"""torch.optim.Adagrad, RMSprop, Adadelta and Adamax as declarations over gradtx's transforms.

Each ``*_chain`` takes torch's keyword names and defaults for one parameter
group and returns a chain whose updates equal torch 2.13's single-tensor step.
The ``use_*`` flags say whether a stage exists at all (torch skips weight decay
when ``weight_decay == 0`` and keeps no momentum buffer when ``momentum == 0``);
they default to whether the value is non-zero, and callers that pass traced
values set them explicitly.
"""

from __future__ import annotations

from typing import Any

from gradtx._hyper import value_at
from gradtx.base import GradientTransformation, chain, identity
from gradtx.transforms.accumulators import scale_by_adadelta, scale_by_adamax, scale_by_rms, scale_by_rss, scale_by_stddev
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.momentum import trace
from gradtx.transforms.scaling import maximize as negate, scale_by_learning_rate

__all__: list[str] = []


def _flag(flag: bool | None, value: Any) -> bool:
    return bool(value != 0) if flag is None else flag


def _head(maximize: bool, weight_decay: Any, use_weight_decay: bool | None) -> tuple[GradientTransformation, ...]:
    """torch's common prologue: negate the gradient, then add coupled L2 decay."""
    return (
        negate() if maximize else identity(),
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
    step_size = lambda count: value_at(lr, count) / (1 + count * lr_decay)  # noqa: E731
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
