"""Optimizers as chains of transforms, under optax's names; each module's ``__all__`` is re-exported here."""

from gradtx.aliases import accumulators, adam_variants, core, factored, second_order, step_rules
from gradtx.aliases.accumulators import *  # noqa: F403
from gradtx.aliases.adam_variants import *  # noqa: F403
from gradtx.aliases.core import *  # noqa: F403
from gradtx.aliases.factored import *  # noqa: F403
from gradtx.aliases.second_order import *  # noqa: F403
from gradtx.aliases.step_rules import *  # noqa: F403
from gradtx.aliases import optimistic
from gradtx.aliases.optimistic import *  # noqa: F403

_MODULES = (accumulators, adam_variants, core, factored, second_order, step_rules)
_MODULES += (optimistic,)
__all__ = [name for module in _MODULES for name in module.__all__]

# optax.contrib's chained optimizers
from gradtx.aliases import contrib  # noqa: E402
from gradtx.aliases.contrib import *  # noqa: E402,F403

__all__ += contrib.__all__
# Optimizers from optax.contrib and beyond (schedule-free, ADOPT, AdEMAMix, Prodigy).
from gradtx.aliases import beyond  # noqa: E402
from gradtx.aliases.beyond import *  # noqa: E402,F403

__all__ += beyond.__all__
# GaLore and Sophia, as optax.contrib's; PSGD Kron.
from gradtx.aliases import projected  # noqa: E402
from gradtx.aliases.projected import *  # noqa: E402,F403

__all__ += projected.__all__
from gradtx.aliases import preconditioned  # noqa: E402
from gradtx.aliases.preconditioned import *  # noqa: E402,F403

__all__ += preconditioned.__all__
