"""torch.optim.SGD as a declaration over gradtx's transforms."""

from __future__ import annotations

from typing import Any

from gradtx.base import GradientTransformation, chain, identity
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.momentum import trace
from gradtx.transforms.scaling import maximize as negate, scale_by_learning_rate

__all__: list[str] = []


def sgd_chain(lr: Any = 1e-3, momentum: Any = 0.0, dampening: Any = 0.0, weight_decay: Any = 0.0,
              nesterov: bool = False, maximize: bool = False, use_momentum: bool | None = None,
              use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.SGD's step for one parameter group, as a chain.

    ``maximize -> coupled L2 decay -> trace(torch_init=True) -> -lr``. The
    ``use_*`` flags say whether a stage exists at all (torch keeps no momentum
    buffer when ``momentum == 0``); they default to whether the value is non-zero,
    and callers that pass traced values set them explicitly.
    """
    use_momentum = bool(momentum != 0) if use_momentum is None else use_momentum
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    return chain(
        negate() if maximize else identity(),
        add_decayed_weights(weight_decay) if use_weight_decay else identity(),
        trace(momentum, nesterov, dampening=dampening, torch_init=True) if use_momentum else identity(),
        scale_by_learning_rate(lr),
    )
