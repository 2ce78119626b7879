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

_MODULES = (accumulators, adam_variants, clipping, decay, dtypes, factored, hyperparams, lbfgs, linesearch, momentum, moments, muon,
            scaling, sparse, step_rules, wrappers)
__all__ = [name for module in _MODULES for name in module.__all__]

from gradtx.transforms import adam_mini, mars, preconditioned, scion  # noqa: E402
from gradtx.transforms.adam_mini import *  # noqa: E402,F403
from gradtx.transforms.mars import *  # noqa: E402,F403
from gradtx.transforms.preconditioned import *  # noqa: E402,F403
from gradtx.transforms.scion import *  # noqa: E402,F403

__all__ += adam_mini.__all__ + mars.__all__ + preconditioned.__all__ + scion.__all__
