"""Schedules: pure functions ``count -> value`` for any hyperparameter; ``gradtx/__init__.py`` re-exports them.

- ``optax_style``: optax's schedules under optax's names and numbers.
- ``torch_style``: torch.optim.lr_scheduler's rules in closed form.
- ``combinators``: schedules in sequence (``join_schedules``) or multiplied (``chain_schedules``).
- ``plateau``: ``reduce_on_plateau``, a stateful transform.
- ``values``: a schedule's values over a range of steps, for plots.
- ``_object``: ``ScheduleFn``, what every factory returns.
"""
