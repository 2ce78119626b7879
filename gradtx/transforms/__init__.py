"""The composable pieces, one module per family; each module's ``__all__`` is re-exported here."""

from gradtx.transforms import (
    accumulators,
    adam_variants,
    clipping,
    decay,
    dtypes,
    factored,
    hyperparams,
    lbfgs,
    linesearch,
    momentum,
    moments,
    muon,
    scaling,
    sparse,
    step_rules,
    wrappers,
)
from gradtx.transforms import accumulation, blockwise, constraining, empty_states, monitoring, numerics, slow_weights
from gradtx.transforms.accumulators import *  # noqa: F403
from gradtx.transforms.adam_variants import *  # noqa: F403
from gradtx.transforms.clipping import *  # noqa: F403
from gradtx.transforms.decay import *  # noqa: F403
from gradtx.transforms.dtypes import *  # noqa: F403
from gradtx.transforms.factored import *  # noqa: F403
from gradtx.transforms.hyperparams import *  # noqa: F403
from gradtx.transforms.lbfgs import *  # noqa: F403
from gradtx.transforms.linesearch import *  # noqa: F403
from gradtx.transforms.momentum import *  # noqa: F403
from gradtx.transforms.moments import *  # noqa: F403
from gradtx.transforms.muon import *  # noqa: F403
from gradtx.transforms.scaling import *  # noqa: F403
from gradtx.transforms.sparse import *  # noqa: F403
from gradtx.transforms.step_rules import *  # noqa: F403
from gradtx.transforms.wrappers import *  # noqa: F403
from gradtx.transforms.accumulation import *  # noqa: F403
from gradtx.transforms.blockwise import *  # noqa: F403
from gradtx.transforms.constraining import *  # noqa: F403
from gradtx.transforms.empty_states import *  # noqa: F403
from gradtx.transforms.slow_weights import *  # noqa: F403
from gradtx.transforms.monitoring import *  # noqa: F403
from gradtx.transforms.numerics import *  # noqa: F403

_MODULES = (accumulators, adam_variants, clipping, decay, dtypes, factored, hyperparams, lbfgs, linesearch, momentum, moments, muon,
            scaling, sparse, step_rules, wrappers)
_MODULES += (accumulation, blockwise, constraining, empty_states, monitoring, numerics, slow_weights)
__all__ = [name for module in _MODULES for name in module.__all__]

# optax.contrib's step-size-free methods and wrappers
from gradtx.transforms import contrib_lr_free, contrib_wrappers  # noqa: E402
from gradtx.transforms.contrib_lr_free import *  # noqa: E402,F403
from gradtx.transforms.contrib_wrappers import *  # noqa: E402,F403

__all__ += contrib_lr_free.__all__ + contrib_wrappers.__all__
# Optimizers beyond torch.optim and optax's core (schedule-free, ADOPT, AdEMAMix, Prodigy, cautious).
from gradtx.transforms import schedule_free as _schedule_free  # noqa: E402 - the function shadows the module
from gradtx.transforms.schedule_free import *  # noqa: E402,F403

__all__ += _schedule_free.__all__
from gradtx.transforms import beyond  # noqa: E402
from gradtx.transforms.beyond import *  # noqa: E402,F403

__all__ += beyond.__all__
from gradtx.transforms import prodigy as _prodigy  # noqa: E402 - the function shadows the module
from gradtx.transforms.prodigy import *  # noqa: E402,F403

__all__ += _prodigy.__all__
# GaLore, Sophia (optax.contrib's and pytorch-optimizer's conventions) and PSGD Kron.
from gradtx.transforms import galore, psgd, sophia  # noqa: E402
from gradtx.transforms.galore import *  # noqa: E402,F403
from gradtx.transforms.psgd import *  # noqa: E402,F403
from gradtx.transforms.sophia import *  # noqa: E402,F403

__all__ += galore.__all__ + psgd.__all__ + sophia.__all__
from gradtx.transforms import adam_mini, mars, preconditioned, scion  # noqa: E402
from gradtx.transforms.adam_mini import *  # noqa: E402,F403
from gradtx.transforms.mars import *  # noqa: E402,F403
from gradtx.transforms.preconditioned import *  # noqa: E402,F403
from gradtx.transforms.scion import *  # noqa: E402,F403

__all__ += adam_mini.__all__ + mars.__all__ + preconditioned.__all__ + scion.__all__
