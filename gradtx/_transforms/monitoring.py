"""Measuring the updates as they pass, into the state: monitor, snapshot, measure_with_ema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from gradtx._base import (
    GradientTransformation, GradientTransformationExtraArgs, chain, stateless, with_extra_args_support,
)
from gradtx._transforms.accumulation import ema

__all__ = ["SnapshotState", "snapshot", "MonitorState", "monitor", "measure_with_ema"]


class SnapshotState(NamedTuple):
    """State of :func:`snapshot`."""

    measurement: dict[str, Any]  # {measure_name: measure(last updates)} (at init: measure(params))


def snapshot(measure_name: str, measure: Callable[[Any], Any]) -> GradientTransformation:
    """Stores ``measure(updates)`` in the state under ``measure_name``; the updates pass unchanged (``optax.snapshot``).

    Example: ``chain(snapshot("grad_norm", gradtx.global_norm), gradtx.adam(1e-3))``.
    """

    def init(params):
        return SnapshotState({measure_name: measure(params)})

    def update(updates, state, params=None, **extra_args):
        del state, params, extra_args
        return updates, SnapshotState({measure_name: measure(updates)})

    return GradientTransformation(init, update)


class MonitorState(NamedTuple):
    """State of :func:`monitor`."""

    measurements: dict[str, Any]  # name -> the measure's output at the last step (empty at init)
    measure_states: tuple  # the state of each measure, in the order of `measures`


def monitor(measures: dict[str, Any]) -> GradientTransformationExtraArgs:
    """Records several measures of the updates; the updates pass unchanged (``optax.monitor``).

    Each measure is either a function ``updates -> value`` or a transformation
    whose *updates* output is the measurement (e.g. :func:`measure_with_ema`), so
    a measure may keep state of its own. Measurements are in
    ``state.measurements[name]``.
    """
    transforms = {
        name: with_extra_args_support(stateless(lambda u, _, m=m: m(u)) if callable(m) else m)
        for name, m in measures.items()
    }

    def init(params):
        return MonitorState({}, tuple(tx.init(params) for tx in transforms.values()))

    def update(updates, state, params=None, **extra_args):
        measurements, states = {}, []
        for (name, tx), s in zip(transforms.items(), state.measure_states):
            measurements[name], s = tx.update(updates, s, params, **extra_args)
            states.append(s)
        return updates, MonitorState(measurements, tuple(states))

    return GradientTransformationExtraArgs(init, update)


def measure_with_ema(measure: Callable[[Any], Any], decay: Any, debias: bool = True,
                     accumulator_dtype: Any = None) -> GradientTransformation:
    """A transformation whose output is the moving average of ``measure(updates)`` (``optax.measure_with_ema``).

    Meant as a measure of :func:`monitor`; see :func:`gradtx.ema` for ``decay``,
    ``debias`` and ``accumulator_dtype``.
    """
    average = ema(decay, debias, accumulator_dtype)
    measured_average = GradientTransformation(lambda params: average.init(measure(params)), average.update)
    return chain(stateless(lambda updates, _: measure(updates)), measured_average)
