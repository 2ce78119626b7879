"""Optimizers as chains of transforms, under optax's names; each module's ``__all__`` is re-exported here."""

from gradtx.aliases import accumulators, adam_variants, core, factored, second_order, step_rules
from gradtx.aliases.accumulators import *  # noqa: F403
from gradtx.aliases.adam_variants import *  # noqa: F403
from gradtx.aliases.core import *  # noqa: F403
from gradtx.aliases.factored import *  # noqa: F403
from gradtx.aliases.second_order import *  # noqa: F403
from gradtx.aliases.step_rules import *  # noqa: F403

_MODULES = (accumulators, adam_variants, core, factored, second_order, step_rules)
__all__ = [name for module in _MODULES for name in module.__all__]

from gradtx.aliases import preconditioned  # noqa: E402
from gradtx.aliases.preconditioned import *  # noqa: E402,F403

__all__ += preconditioned.__all__
