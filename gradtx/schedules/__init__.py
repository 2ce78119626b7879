"""Schedules: pure functions ``count -> value`` for any hyperparameter.

- :mod:`~gradtx.schedules.optax_style`: optax's schedules under optax's names and numbers.
- :mod:`~gradtx.schedules.torch_style`: torch.optim.lr_scheduler's rules in closed form.
- :mod:`~gradtx.schedules.combinators`: schedules in sequence (:func:`join_schedules`) or
  multiplied (:func:`chain_schedules`).
- :mod:`~gradtx.schedules.plateau`: :func:`reduce_on_plateau`, a stateful transform.
- :func:`schedule_values`: a schedule's values over a range of steps, for plots.
- :class:`ScheduleFn`: what every factory returns, a small immutable object that
  shows, compares, pickles and saves (``.npz``) as its factory's name and arguments.

Every schedule works on int32 step counters under ``jit``, ``vmap`` and ``grad``
and is accepted wherever a hyperparameter is (``learning_rate``, ``momentum``,
``b1``, ``weight_decay``, ...). The stateful face's schedulers are in
:mod:`gradtx.optim.lr_scheduler`.
"""

from gradtx.schedules import combinators, optax_style, plateau, torch_style, values
from gradtx.schedules._object import ScheduleFn
from gradtx.schedules.combinators import *  # noqa: F403
from gradtx.schedules.optax_style import *  # noqa: F403
from gradtx.schedules.plateau import *  # noqa: F403
from gradtx.schedules.torch_style import *  # noqa: F403
from gradtx.schedules.values import *  # noqa: F403

__all__ = [name for module in (combinators, optax_style, plateau, torch_style, values) for name in module.__all__]
__all__ += ["ScheduleFn"]
