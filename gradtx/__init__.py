"""gradtx: gradient transformations for JAX, with an optax-style functional face and a torch.optim-style facade.

The functional face lives here (``gradtx.adam``, ``gradtx.chain``, ...); the
stateful, torch-style face is :mod:`gradtx.optim`.
"""

from gradtx.base import EmptyState as EmptyState
from gradtx.base import GradientTransformation as GradientTransformation
from gradtx.base import Params as Params
from gradtx.base import Schedule as Schedule
from gradtx.base import ScalarOrSchedule as ScalarOrSchedule
from gradtx.base import Updates as Updates
from gradtx.base import apply_updates as apply_updates
from gradtx.base import chain as chain
from gradtx.base import identity as identity
from gradtx.base import named_chain as named_chain
from gradtx.base import set_to_zero as set_to_zero
from gradtx.base import stateless as stateless
from gradtx.base import stateless_with_tree_map as stateless_with_tree_map
from gradtx.aliases import *  # noqa: F403 - each alias module's __all__
from gradtx.checkpoint import *  # noqa: F403 - saving and restoring state
from gradtx.paths import *  # noqa: F403 - groups by path pattern
from gradtx.schedules import *  # noqa: F403 - schedules: pure functions of the step
from gradtx.sharding import *  # noqa: F403 - sharded and ZeRO-1 state
from gradtx.state_tools import *  # noqa: F403 - reading and carrying state
from gradtx.transforms import *  # noqa: F403 - each transform module's __all__
from gradtx.tree import safe_increment as safe_increment
from gradtx.tree import tree_global_norm as global_norm  # noqa: F401 - optax's name
from gradtx.base import ArrayTree as ArrayTree
from gradtx.base import GradientTransformationExtraArgs as GradientTransformationExtraArgs
from gradtx.base import MaskOrFn as MaskOrFn
from gradtx.base import OptState as OptState
from gradtx.base import StatefulSchedule as StatefulSchedule
from gradtx.base import TransformInitFn as TransformInitFn
from gradtx.base import TransformUpdateExtraArgsFn as TransformUpdateExtraArgsFn
from gradtx.base import TransformUpdateFn as TransformUpdateFn
from gradtx.base import incremental_update as incremental_update
from gradtx.base import init_empty_state as init_empty_state
from gradtx.base import periodic_update as periodic_update
from gradtx.base import with_extra_args_support as with_extra_args_support

__version__ = "0.1.0"
from gradtx import microbatching as microbatching  # noqa: E402 - optax.microbatching
from gradtx.microbatching import microbatch as microbatch  # noqa: E402,F401 - optax's top-level name
from gradtx import projections as projections  # noqa: E402 - optax.projections
from gradtx import second_order as second_order  # noqa: E402 - optax.second_order
