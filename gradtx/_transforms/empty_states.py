"""optax's names for the states of transformations that keep none: each is :class:`gradtx.EmptyState`.

Code written against optax (``isinstance(s, optax.ClipState)``,
``optax.tree.get(state, ...)``) finds the same type here.
"""

from gradtx._base import EmptyState

__all__ = ["AddDecayedWeightsState", "ClipByGlobalNormState", "ClipState", "ScaleState", "ScaleByTrustRatioState"]

AddDecayedWeightsState = EmptyState  # add_decayed_weights
ClipByGlobalNormState = EmptyState  # clip_by_global_norm
ClipState = EmptyState  # clip
ScaleState = EmptyState  # scale
ScaleByTrustRatioState = EmptyState  # scale_by_trust_ratio
