"""Microbatching: run a function over a batch in slices and accumulate the results, as ``optax.microbatching``.

``microbatch(fun, argnums, microbatch_size)`` splits the batch arguments into
``batch_size // microbatch_size`` slices, calls ``fun`` on each inside one
``jax.lax.fori_loop`` and combines the outputs with an :class:`Accumulator`
(sum, mean, running mean or concatenation, per output leaf), so a large batch
fits in memory. ``micro_vmap`` and ``micro_grad`` build per-example maps and
per-example gradients on it (DP-SGD's clipped per-example gradients, for one).

Slices take every ``num_microbatches``-th example (``reshape_batch_axis``
reshapes in Fortran order), so a batch axis sharded over devices stays sharded
within each microbatch. Follows optax 0.2.8 (same arguments, same numbers).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["Accumulator", "AccumulationType", "microbatch", "micro_vmap", "micro_grad", "reshape_batch_axis"]

Function = Callable[..., Any]
IndividualOutputs = collections.namedtuple("Aux", ["values", "metrics", "aux"])


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """How the outputs of the microbatches are combined.

    Attributes:
      init: ``value_shape -> carry``, the empty accumulation (given ``jax.eval_shape`` of one output).
      update: ``(carry, value, index) -> carry``, adds microbatch ``index``'s output.
      finalize: ``carry -> result``.
      aggregate: ``values -> value``, combines the outputs of one microbatch along their leading axis
        (what ``micro_vmap`` applies to each vmapped microbatch).
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], Any]
    finalize: Callable[[Any], Any]
    aggregate: Callable[[Any], Any]


class AccumulationType(enum.Enum):
    """The built-in accumulations."""

    MEAN = enum.auto()  # the mean over microbatches (floating values only)
    SUM = enum.auto()  # the sum over microbatches
    RUNNING_MEAN = enum.auto()  # the mean, updated as a running average (floating values only)
    CONCAT = enum.auto()  # the outputs concatenated back in batch order


def _floating_only(fn: Function) -> Function:
    def checked(*args, **kwargs):
        dtypes = jax.tree.leaves(jax.tree.map(lambda x: x.dtype, (args, kwargs)))
        if not all(jnp.issubdtype(d, jnp.floating) for d in dtypes):
            raise ValueError("MEAN and RUNNING_MEAN Accumulators require floating-point values "
                             f"(got {sorted({str(d) for d in dtypes})}); use SUM for integer outputs.")
        return fn(*args, **kwargs)

    return checked


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
    """Splits axis ``axis`` of every leaf into ``(num_microbatches, microbatch_size)``, in Fortran order.

    Microbatch ``i`` holds examples ``i, i + num_microbatches, ...``, so a batch axis
    sharded over devices is still spread over them in each microbatch.

    Raises:
      ValueError: under explicit sharding, if the shards do not divide ``microbatch_size``.
    """
    def reshape(x):
        new_shape = x.shape[:axis] + (-1, microbatch_size) + x.shape[axis + 1:]
        sharding = jax.typeof(x).sharding
        if not sharding.mesh.are_all_axes_explicit:
            return x.reshape(new_shape, order="F")
        spec = sharding.spec
        new_spec = spec if len(spec) < axis else jax.P(*spec[:axis], None, spec[axis], *spec[axis + 1:])
        nshards = x.shape[axis] // sharding.shard_shape(x.shape)[axis]
        if microbatch_size % nshards != 0:
            raise ValueError(f"nshards={nshards} must evenly divide microbatch_size={microbatch_size}.")
        return x.reshape(new_shape, order="F", out_sharding=jax.sharding.NamedSharding(sharding.mesh, new_spec))

    return jax.tree.map(reshape, tree)


def _lift(acc: Accumulator) -> Accumulator:
    """An accumulator of arrays applied leafwise to trees."""
    return Accumulator(lambda value: jax.tree.map(acc.init, value),
                       lambda carry, value, i: jax.tree.map(lambda c, v: acc.update(c, v, i), carry, value),
                       lambda carry: jax.tree.map(acc.finalize, carry),
                       lambda values: jax.tree.map(acc.aggregate, values))


def _compose(accumulators: Any) -> Accumulator:
    """One accumulator from a tree of them, each acting on the matching subtree of the outputs."""
    return Accumulator(
        lambda values: jax.tree.map(lambda a, v: a.init(v), accumulators, values),
        lambda carry, value, i: jax.tree.map(lambda a, c, v: a.update(c, v, i), accumulators, carry, value),
        lambda carry: jax.tree.map(lambda a, c: a.finalize(c), accumulators, carry),
        lambda values: jax.tree.map(lambda a, v: a.aggregate(v), accumulators, values),
    )


def _positive(num_microbatches: int) -> None:
    if num_microbatches <= 0:
        raise ValueError(f"num_microbatches={num_microbatches} must be positive.")


def _add(carry: Any, value: Any, index: Any) -> Any:
    del index
    return carry + value


def _sum() -> Accumulator:
    return _lift(Accumulator(jnp.zeros_like, _add, lambda x: x, functools.partial(jnp.sum, axis=0)))


def _mean(num_microbatches: int) -> Accumulator:
    _positive(num_microbatches)
    return _lift(Accumulator(_floating_only(jnp.zeros_like), _add, lambda carry: carry / num_microbatches,
                             functools.partial(jnp.mean, axis=0)))


def _running_mean() -> Accumulator:
    def update(carry, value, index):
        p = index / (index + 1)
        return carry * p + value * (1 - p)

    return _lift(Accumulator(_floating_only(jnp.zeros_like), update, lambda x: x, functools.partial(jnp.mean, axis=0)))


def _concat(num_microbatches: int) -> Accumulator:
    _positive(num_microbatches)

    def finalize(carry):
        sharding = jax.typeof(carry).sharding
        kwargs = {}
        if sharding.mesh.are_all_axes_explicit:
            spec = jax.P(*sharding.spec[1:]) if sharding.spec else jax.P()
            kwargs["out_sharding"] = jax.sharding.NamedSharding(sharding.mesh, spec)
        return carry.reshape(-1, *carry.shape[2:], order="F", **kwargs)

    return _lift(Accumulator(lambda v: jnp.broadcast_to(jnp.zeros_like(v), (num_microbatches, *v.shape)),
                             lambda carry, value, index: carry.at[index].set(value), finalize, lambda x: x))


def _canonicalize(tree: Any, num_microbatches: int | None) -> Accumulator:
    def one(acc):
        if isinstance(acc, Accumulator):
            return acc
        if acc == AccumulationType.MEAN:
            return _mean(num_microbatches)
        if acc == AccumulationType.SUM:
            return _sum()
        if acc == AccumulationType.RUNNING_MEAN:
            return _running_mean()
        if acc == AccumulationType.CONCAT:
            return _concat(num_microbatches)
        raise ValueError(f"Unknown accumulator: {acc}; use an Accumulator or an AccumulationType.")

    return _compose(jax.tree.map(one, tree))


def _split_args(microbatch_size, argnums, argnames, in_axes, args, kwargs):
    """The batch arguments reshaped into microbatches, and the batch size."""
    batch_args = [args[i] for i in argnums] + [kwargs[n] for n in argnames]
    sizes = jax.tree.leaves(jax.tree.map(lambda ax, sub: jax.tree.map(lambda x: x.shape[ax], sub),
                                         tuple(in_axes), tuple(batch_args)))
    if len(frozenset(sizes)) > 1:
        raise ValueError(f"Batch Arguments must have equal-size batch axes, found {sizes}.")
    batch_size = sizes[0]
    if batch_size % microbatch_size != 0:
        raise ValueError(f"batch_size={batch_size} must be divisible by microbatch_size={microbatch_size}.")
    new_args, new_kwargs = list(args), dict(kwargs)
    for i, ax in zip(argnums, in_axes):
        new_args[i] = reshape_batch_axis(args[i], microbatch_size, ax)
    for name, ax in zip(argnames, in_axes[len(argnums):]):
        new_kwargs[name] = reshape_batch_axis(kwargs[name], microbatch_size, ax)
    return tuple(new_args), new_kwargs, batch_size


def microbatch(fun: Function, argnums: int | Sequence[int], microbatch_size: int | None,
               accumulator: Any = AccumulationType.SUM, *, argnames: str | Sequence[str] = (),
               in_axes: int | Sequence[int] = 0, num_real_microbatches: int | jax.Array | None = None) -> Function:
    """``fun`` run over microbatches of its batch arguments, the outputs accumulated.

    As ``optax.microbatching.microbatch``.

    Args:
      fun: the function.
      argnums: the positions of the batch arguments.
      microbatch_size: examples per microbatch; ``None`` returns ``fun`` itself.
      accumulator: an :class:`Accumulator`, an :class:`AccumulationType`, or a tree of them matching ``fun``'s output.
      argnames: the names of keyword batch arguments.
      in_axes: the batch axis of each batch argument (positional first, then keywords), or one for all.
      num_real_microbatches: stop after this many microbatches (the rest are padding).

    Returns:
      A function with ``fun``'s arguments.

    Raises:
      ValueError: when called, if batch axes differ in size or ``microbatch_size`` does not divide them.
    """
    if microbatch_size is None:
        return fun
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    argnames = (argnames,) if isinstance(argnames, str) else tuple(argnames)
    in_axes = (in_axes,) * (len(argnums) + len(argnames)) if isinstance(in_axes, int) else tuple(in_axes)

    def microbatched(*args, **kwargs):
        split_args, split_kwargs, batch_size = _split_args(microbatch_size, argnums, argnames, in_axes, args, kwargs)
        num_microbatches = batch_size // microbatch_size
        acc = _canonicalize(accumulator, num_microbatches)

        def one(index):
            take = lambda ax: functools.partial(jnp.take, indices=index, axis=ax)  # noqa: E731
            call_args, call_kwargs = list(split_args), dict(split_kwargs)
            for i, ax in zip(argnums, in_axes):
                call_args[i] = jax.tree.map(take(ax), call_args[i])
            for name, ax in zip(argnames, in_axes[len(argnums):]):
                call_kwargs[name] = jax.tree.map(take(ax), call_kwargs[name])
            return fun(*call_args, **call_kwargs)

        bound = num_microbatches if num_real_microbatches is None else num_real_microbatches
        carry = jax.lax.fori_loop(0, bound, lambda i, c: acc.update(c, one(i), i), acc.init(jax.eval_shape(one, 0)))
        return acc.finalize(carry)

    return microbatched


def micro_vmap(fun: Function, in_axes: int | Sequence[int] = 0, out_axes: Any = 0, *,
               microbatch_size: int | None = None, vmap_fn: Callable = jax.vmap,
               accumulator: Any = AccumulationType.CONCAT,
               num_real_microbatches: int | jax.Array | None = None) -> Function:
    """``vmap_fn(fun)`` applied one microbatch at a time (``optax.microbatching.micro_vmap``).

    Each microbatch is vmapped and reduced by the accumulator's ``aggregate``; the
    microbatches are then accumulated. With the default ``CONCAT`` the result is
    ``vmap_fn(fun, in_axes)(...)`` computed in slices.

    Args:
      fun: the per-example function.
      in_axes: as ``jax.vmap``'s, one per positional argument (``None`` for an unbatched one).
      out_axes: only 0.
      microbatch_size: examples per microbatch; ``None`` vmaps the whole batch at once.
      vmap_fn: the map (``jax.vmap`` or a compatible one).
      accumulator: an :class:`Accumulator`, an :class:`AccumulationType`, or a tree of them.
      num_real_microbatches: stop after this many microbatches.

    Raises:
      NotImplementedError: for ``out_axes != 0``.
    """
    if out_axes != 0:
        raise NotImplementedError("out_axis != 0 is not currently supported")
    in_axes = (in_axes,) if isinstance(in_axes, int) else tuple(in_axes)

    def vmap_and_reduce(*args, kwargs):
        output = vmap_fn(fun, in_axes, out_axes)(*args, **kwargs)
        return _canonicalize(accumulator, jax.tree.leaves(output)[0].shape[0]).aggregate(output)

    mapped = microbatch(vmap_and_reduce, argnums=tuple(i for i, ax in enumerate(in_axes) if ax is not None),
                        argnames="kwargs", microbatch_size=microbatch_size, accumulator=accumulator,
                        in_axes=tuple(ax for ax in in_axes if ax is not None) + (0,),
                        num_real_microbatches=num_real_microbatches)
    return lambda *args, **kwargs: mapped(*args, kwargs=kwargs)


def micro_grad(fun: Function, has_aux: bool = False, argnums: int | Sequence[int] = 0, *,
               batch_argnums: int | Sequence[int] = 1, keep_batch_dim: bool = True,
               microbatch_size: int | None = None, accumulator: Any = AccumulationType.SUM,
               transform_fn: Callable[[Any], Any] = lambda x: x, metrics_fn: Callable[[Any], Any] = lambda x: None,
               num_real_microbatches: int | jax.Array | None = None) -> Function:
    """Per-example gradients, transformed and accumulated over microbatches (``optax.microbatching.micro_grad``).

    Each example's gradient of ``fun`` goes through ``transform_fn`` (clipping,
    for DP-SGD) and is accumulated; the per-example values, ``metrics_fn`` of the
    gradients and the aux outputs are concatenated.

    Args:
      fun: the loss of one example (``(loss, aux)`` with ``has_aux``).
      has_aux: whether ``fun`` returns an aux output.
      argnums: the arguments to differentiate.
      batch_argnums: the positions of the batch arguments.
      keep_batch_dim: give ``fun`` each example with a batch axis of size 1.
      microbatch_size: examples per microbatch; ``None`` does the whole batch at once.
      accumulator: how the transformed gradients are accumulated.
      transform_fn: applied to each example's gradient.
      metrics_fn: per-example metrics of each gradient.
      num_real_microbatches: stop after this many microbatches.

    Returns:
      A function of ``fun``'s arguments returning ``(accumulated gradients, Aux(values, metrics, aux))``.
    """
    batch_argnums = (batch_argnums,) if isinstance(batch_argnums, int) else tuple(batch_argnums)
    with_aux = fun if has_aux else lambda *args, **kwargs: (fun(*args, **kwargs), None)
    value_and_grad = jax.value_and_grad(with_aux, argnums, has_aux=True)

    def grad_fn(*args, **kwargs):
        (value, aux), grad = value_and_grad(*args, **kwargs)
        return transform_fn(grad), IndividualOutputs(values=value, metrics=metrics_fn(grad), aux=aux)

    in_axes = [None] * (max(batch_argnums) + 1)
    for i in batch_argnums:
        in_axes[i] = 0
    mapped = micro_vmap(grad_fn, in_axes=in_axes, accumulator=(accumulator, AccumulationType.CONCAT),
                        microbatch_size=microbatch_size, num_real_microbatches=num_real_microbatches)
    if not keep_batch_dim:
        return mapped

    def with_example_axis(*args, **kwargs):
        args = list(args)
        for i in batch_argnums:
            args[i] = jax.tree.map(lambda x: jnp.expand_dims(x, axis=1), args[i])
        return mapped(*args, **kwargs)

    return with_example_axis
