"""torch.optim.Adam and AdamW as declarations over gradtx's transforms."""

from __future__ import annotations

from typing import Any

from gradtx.base import GradientTransformation, chain, identity
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.decay import decoupled_weight_decay as decay_after_lr
from gradtx.transforms.moments import scale_by_adam
from gradtx.transforms.scaling import maximize as negate, scale_by_learning_rate

__all__: list[str] = []


def adam_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 0.0,
               amsgrad: bool = False, maximize: bool = False, decoupled_weight_decay: bool = False,
               use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.Adam's step for one parameter group (AdamW's with ``decoupled_weight_decay=True``).

    Coupled: ``maximize -> +wd*p -> adam(amsgrad on the raw maximum) -> -lr``.
    Decoupled: ``maximize -> adam -> -lr -> -lr*wd*p``, i.e. torch's
    ``p.mul_(1 - lr*wd)`` before the Adam step.
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    b1, b2 = betas
    coupled = use_weight_decay and not decoupled_weight_decay
    decoupled = use_weight_decay and decoupled_weight_decay
    return chain(
        negate() if maximize else identity(),
        add_decayed_weights(weight_decay) if coupled else identity(),
        scale_by_adam(b1, b2, eps, amsgrad=amsgrad, amsgrad_max_of="raw"),
        scale_by_learning_rate(lr),
        decay_after_lr(weight_decay, lr) if decoupled else identity(),
    )


def adamw_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 1e-2,
                amsgrad: bool = False, maximize: bool = False, use_weight_decay: bool | None = None
                ) -> GradientTransformation:
    """torch.optim.AdamW's step: :func:`adam_chain` with decoupled decay."""
    return adam_chain(lr, betas, eps, weight_decay, amsgrad, maximize, True, use_weight_decay)
