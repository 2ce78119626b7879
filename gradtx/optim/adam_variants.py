"""torch.optim.NAdam and RAdam as declarations over gradtx's transforms."""

from __future__ import annotations

from typing import Any

from gradtx.base import GradientTransformation, chain, identity
from gradtx.transforms.adam_variants import scale_by_nadam, scale_by_radam
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.decay import decoupled_weight_decay as decay_after_lr
from gradtx.transforms.scaling import maximize as negate, scale_by_learning_rate

__all__: list[str] = []


def _torch_adam_like(direction: GradientTransformation, lr: Any, weight_decay: Any, decoupled_weight_decay: bool,
                     maximize: bool, use_weight_decay: bool | None) -> GradientTransformation:
    """``maximize -> (+wd*p) -> direction -> -lr -> (-lr*wd*p)``: torch's shared Adam-family step."""
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    coupled = use_weight_decay and not decoupled_weight_decay
    decoupled = use_weight_decay and decoupled_weight_decay
    return chain(
        negate() if maximize else identity(),
        add_decayed_weights(weight_decay) if coupled else identity(),
        direction,
        scale_by_learning_rate(lr),
        decay_after_lr(weight_decay, lr) if decoupled else identity(),
    )


def nadam_chain(lr: Any = 2e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 0.0,
                momentum_decay: Any = 4e-3, decoupled_weight_decay: bool = False, maximize: bool = False,
                use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.NAdam's step for one parameter group, as a chain.

    Coupled: ``maximize -> +wd*p -> scale_by_nadam -> -lr``. Decoupled
    (``decoupled_weight_decay=True``, torch's NAdamW): ``maximize -> scale_by_nadam
    -> -lr -> -lr*wd*p``, i.e. ``p.mul_(1 - lr*wd)`` before the step. The chain's
    state holds torch's ``step``, ``mu_product`` (float32, as torch keeps it),
    ``exp_avg`` and ``exp_avg_sq`` as ``count``, ``mu_product``, ``mu``, ``nu``.
    ``use_weight_decay`` says whether a decay stage exists (defaults to ``weight_decay != 0``;
    callers passing traced values set it).
    """
    b1, b2 = betas
    return _torch_adam_like(scale_by_nadam(b1, b2, eps, momentum_decay), lr, weight_decay,
                            decoupled_weight_decay, maximize, use_weight_decay)


def radam_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 0.0,
                decoupled_weight_decay: bool = False, maximize: bool = False,
                use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.RAdam's step for one parameter group, as a chain.

    The direction is ``scale_by_radam(eps_on_raw=True, strict_threshold=True)``
    (torch adds ``eps`` to the root of the raw second moment and rectifies when
    ``rho_t > 5``); weight decay, ``maximize`` and the learning rate are placed as
    in :func:`nadam_chain`. State: torch's ``step``, ``exp_avg``, ``exp_avg_sq`` as
    ``count``, ``mu``, ``nu``.
    """
    b1, b2 = betas
    direction = scale_by_radam(b1, b2, eps, threshold=5.0, eps_on_raw=True, strict_threshold=True)
    return _torch_adam_like(direction, lr, weight_decay, decoupled_weight_decay, maximize, use_weight_decay)
