"""optax.contrib's optimizers that are chains: COCOB, DoG, DoWG, MADGRAD, ACProp and DP-SGD, with optax's
names, arguments and defaults (optax 0.2.8).

D-Adaptation AdamW, MoMo and MoMo-Adam are single transforms in optax and in
gradtx (:func:`gradtx.dadapt_adamw`, :func:`gradtx.momo`, :func:`gradtx.momo_adam`); SAM,
Mechanic and the other wrappers are transforms too (:func:`gradtx.sam`, :func:`gradtx.mechanize`).
"""


from typing import Any, Literal

from gradtx._base import GradientTransformation, ScalarOrSchedule, chain, identity
from gradtx._transforms.contrib_lr_free import (
    scale_by_acprop,
    scale_by_cocob,
    scale_by_dog,
    scale_by_dowg,
    scale_by_madgrad,
)
from gradtx._transforms.contrib_wrappers import differentially_private_aggregate
from gradtx._transforms.decay import add_decayed_weights
from gradtx._transforms.momentum import trace
from gradtx._transforms.scaling import scale_by_learning_rate

__all__ = ["cocob", "dog", "dowg", "madgrad", "acprop", "dpsgd"]


def _decay_or_identity(weight_decay: Any, mask: Any) -> GradientTransformation:
    return identity() if weight_decay is None else add_decayed_weights(weight_decay, mask)


def cocob(learning_rate: ScalarOrSchedule = 1.0, alpha: Any = 100.0, eps: Any = 1e-8, weight_decay: Any = 0.0,
          mask: Any = None) -> GradientTransformation:
    """COCOB-Backprop (Orabona & Tommasi, 2017, https://arxiv.org/abs/1705.07795), as ``optax.contrib.cocob``.

    ``chain(add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate, flip_sign=False),
    scale_by_cocob(alpha, eps))``: the learning rate scales the gradients the bettor sees (1 needs no tuning).

    Args:
      learning_rate: scales the gradients, a float, an array or a schedule.
      alpha: the bound on the growth of the bet.
      eps: the bettor's initial scale.
      weight_decay: coupled (L2) weight decay.
      mask: which leaves are decayed (a tree of booleans or a function of the params).
    """
    return chain(add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate, flip_sign=False),
                 scale_by_cocob(alpha, eps))


def dog(learning_rate: ScalarOrSchedule = 1.0,
        init_step: tuple[Literal["distance", "learning_rate", "heuristic"], Any] = ("heuristic", 1e-6),
        eps: Any = 1e-8, weight_decay: Any = None, mask: Any = None) -> GradientTransformation:
    """Distance over Gradients (Ivgi et al., 2023, https://arxiv.org/abs/2302.12022), as ``optax.contrib.dog``.

    ``chain(add_decayed_weights(weight_decay, mask) (if given), scale_by_dog(init_step, eps),
    scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: a factor on DoG's step size (1 needs no tuning), a float, an array or a schedule.
      init_step: how the first distance is set (see :func:`gradtx.scale_by_dog`).
      eps: added under the root.
      weight_decay: coupled (L2) weight decay; ``None`` for none.
      mask: which leaves are decayed.
    """
    return chain(_decay_or_identity(weight_decay, mask), scale_by_dog(init_step, eps),
                 scale_by_learning_rate(learning_rate))


def dowg(learning_rate: ScalarOrSchedule = 1.0, init_estim_sq_dist: Any = None, eps: Any = 1e-4,
         weight_decay: Any = None, mask: Any = None) -> GradientTransformation:
    """Distance over Weighted Gradients (Khaled et al., 2023, https://arxiv.org/abs/2305.16284), as
    ``optax.contrib.dowg``.

    ``chain(add_decayed_weights(weight_decay, mask) (if given), scale_by_dowg(init_estim_sq_dist, eps),
    scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: a factor on DoWG's step size, a float, an array or a schedule.
      init_estim_sq_dist: the first squared distance estimate; ``None`` uses ``eps``.
      eps: added to the root.
      weight_decay: coupled (L2) weight decay; ``None`` for none.
      mask: which leaves are decayed.
    """
    return chain(_decay_or_identity(weight_decay, mask), scale_by_dowg(init_estim_sq_dist, eps),
                 scale_by_learning_rate(learning_rate))


def madgrad(learning_rate: ScalarOrSchedule, momentum: Any = 0.9, weight_decay: Any = 0.0,
            eps: Any = 1e-6) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi, 2021, https://arxiv.org/abs/2101.11075), as ``optax.contrib.madgrad``.

    ``chain(add_decayed_weights(weight_decay), scale_by_madgrad(learning_rate, momentum, eps))``.

    Args:
      learning_rate: a float, an array or a schedule.
      momentum: the averaging of the iterates.
      weight_decay: coupled (L2) weight decay.
      eps: added to the learning rate and to the cube root.
    """
    return chain(add_decayed_weights(weight_decay),
                 scale_by_madgrad(learning_rate=learning_rate, momentum=momentum, eps=eps))


def acprop(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-16, eps_root: Any = 1e-16,
           weight_decay: Any = 0.0, mask: Any = None) -> GradientTransformation:
    """ACProp (Zhuang et al., 2021, https://arxiv.org/abs/2110.05454), as ``optax.contrib.acprop``.

    ``chain(scale_by_acprop(b1, b2, eps, eps_root), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``: decoupled weight decay, as AdamW's.

    Args:
      learning_rate: a float, an array or a schedule.
      b1: the first moment's decay.
      b2: the central second moment's decay.
      eps: added to the root.
      eps_root: added to the central moment at every step.
      weight_decay: decoupled weight decay, scaled by the learning rate.
      mask: which leaves are decayed.
    """
    return chain(scale_by_acprop(b1=b1, b2=b2, eps=eps, eps_root=eps_root), add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))


def dpsgd(learning_rate: ScalarOrSchedule, l2_norm_clip: Any, noise_multiplier: Any, seed: int,
          momentum: Any = None, nesterov: bool = False) -> GradientTransformation:
    """Differentially private SGD (Abadi et al., 2016, https://arxiv.org/abs/1607.00133), as ``optax.contrib.dpsgd``.

    ``chain(differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=seed),
    trace(momentum, nesterov) (if given), scale_by_learning_rate(learning_rate))``. The
    updates must be per-example gradients (a leading batch axis on every leaf); the
    noise is optax's for the same seed.

    Args:
      learning_rate: a float, an array or a schedule.
      l2_norm_clip: the largest norm of one example's gradient.
      noise_multiplier: the noise's standard deviation, relative to ``l2_norm_clip``.
      seed: the integer seed of the noise.
      momentum: the heavy-ball momentum; ``None`` for none.
      nesterov: use Nesterov momentum.
    """
    return chain(differentially_private_aggregate(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier,
                                                  key=seed),
                 identity() if momentum is None else trace(decay=momentum, nesterov=nesterov),
                 scale_by_learning_rate(learning_rate))
