"""Line searches: optax's backtracking and zoom searches as transforms, and torch's strong-Wolfe search.

The two transforms take optax's extra arguments: ``update(updates, state, params,
value=f(params), grad=grad_f(params), value_fn=f, **fn_kwargs)``; keyword
arguments that ``value_fn`` accepts are passed on to it. They scale the incoming
direction by the step size they find and store the value and gradient at the
accepted point, so that a deterministic loop can reuse them (see
``optax.value_and_grad_from_state``).

:func:`strong_wolfe_search` is the search of ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``
on a flat vector, as a ``jax.lax.while_loop``; :func:`gradtx.lbfgs_torch_step` uses it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._base import GradientTransformation

__all__ = [
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "ZoomLinesearchInfo",
    "ScaleByZoomLinesearchState",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "strong_wolfe_search",
]


# ----------------------------------------------------------------------------- tree arithmetic on the line


def value_dtype(params: Any) -> Any:
    """The dtype of objective values and step sizes for ``params``: the real dtype of the first leaf."""
    return gt.real_dtype(jax.tree.leaves(params)[0])


def add_scale(x: Any, scalar: Any, y: Any) -> Any:
    """``x + scalar * y`` leaf by leaf, in the dtype of ``x``."""
    return gt.tree_map(lambda a, b: (a + scalar * b).astype(a.dtype), x, y)


def real_vdot(a: Any, b: Any, dtype: Any) -> jax.Array:
    """``Re <a, b>`` over all leaves, in ``dtype``."""
    return gt.tree_vdot(a, b).astype(dtype)


def _where(cond: Any, x: Any, y: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), x, y)


def _conj(tree: Any) -> Any:
    return gt.tree_map(jnp.conj, tree)


def _split_fn_kwargs(value_fn: Callable, extra_args: dict, where: str) -> dict:
    """The extra arguments that ``value_fn`` takes; any other raises, as in optax."""
    names = inspect.signature(value_fn).parameters
    unused = sorted(k for k in extra_args if k not in names)
    if unused:
        raise TypeError(
            f"{where}.update got keyword arguments that `value_fn` does not take: {unused}. "
            "Pass only the arguments of `value_fn` (besides value, grad and value_fn) to `update`."
        )
    return dict(extra_args)


def _nan_to_inf(error: jax.Array) -> jax.Array:
    """A criterion's violation, clipped at 0, with NaN counted as an infinite violation."""
    return jnp.where(jnp.isnan(error), jnp.inf, jnp.maximum(error, 0.0)).astype(error.dtype)


# ----------------------------------------------------------------------------- backtracking (Armijo)


class BacktrackingLinesearchInfo(NamedTuple):
    """Diagnostics of the last backtracking search."""

    num_linesearch_steps: jax.Array  # shape=(), int32: trial step sizes evaluated
    decrease_error: jax.Array  # shape=(), value dtype: violation of the decrease criterion (0 = satisfied)


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`."""

    learning_rate: jax.Array  # shape=(), value dtype: the accepted step size
    value: jax.Array  # shape=(), value dtype: f at the accepted point
    grad: Any  # like params, or None without store_grad: the gradient at the accepted point
    info: BacktrackingLinesearchInfo


def scale_by_backtracking_linesearch(max_backtracking_steps: Any, slope_rtol: Any = 1e-4,
                                     decrease_factor: Any = 0.8, increase_factor: Any = 1.5,
                                     max_learning_rate: Any = 1.0, atol: Any = 0.0, rtol: Any = 0.0,
                                     store_grad: bool = False, verbose: bool = False) -> GradientTransformation:
    r"""Backtracking line search for the Armijo sufficient-decrease criterion (``optax.scale_by_backtracking_linesearch``).

    Finds :math:`\eta` with

    .. math::
        f(w + \eta u) \le (1 + \delta) f(w) + \eta\, c\, \langle u, \nabla f(w) \rangle + \epsilon,

    starting from :math:`\min(\text{increase\_factor}\cdot\eta_{prev},\ \eta_{max})` and
    multiplying by ``decrease_factor`` until the criterion holds, then returns
    :math:`\eta u`. If every trial gives an infinite or NaN value the step is 0.
    See Vaswani et al., 2019 (https://arxiv.org/abs/1905.09997) and Nocedal & Wright, 1999.

    ``update`` needs the extra keyword arguments ``value`` (f at params), ``grad``
    (its gradient) and ``value_fn`` (f); further keyword arguments are passed to
    ``value_fn``. The incoming updates must be a descent direction.

    Args:
      max_backtracking_steps: the most trial step sizes after the first.
      slope_rtol: :math:`c`, the fraction of the linear decrease required.
      decrease_factor: the factor shrinking the step size between trials.
      increase_factor: the factor growing the previous step size into the first trial.
      max_learning_rate: the cap on any trial step size.
      atol: :math:`\epsilon`, the absolute tolerance of the criterion.
      rtol: :math:`\delta`, the relative tolerance of the criterion.
      store_grad: also compute the gradient at the accepted point (stored in the state).
      verbose: print a diagnostic when the search fails.
    """
    check_range("decrease_factor", decrease_factor, 0.0, 1.0, low_open=True, where="scale_by_backtracking_linesearch")
    check_range("slope_rtol", slope_rtol, 0.0, 1.0, where="scale_by_backtracking_linesearch")

    def init(params):
        dtype = value_dtype(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.asarray(1.0, dtype), value=jnp.asarray(jnp.inf, dtype),
            grad=gt.tree_zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(num_linesearch_steps=gt.zero_count(),
                                            decrease_error=jnp.asarray(jnp.inf, dtype)))

    def update(updates, state, params=None, *, value, grad, value_fn, **extra_args):
        fn = functools.partial(value_fn, **_split_fn_kwargs(value_fn, extra_args, "scale_by_backtracking_linesearch"))
        dtype = state.value.dtype
        value = jnp.asarray(value, dtype)
        slope = real_vdot(_conj(updates), grad, dtype)  # Re <u, g>, optax's pairing for complex leaves

        def decrease_error(stepsize, new_value):
            return _nan_to_inf(new_value - (1.0 + rtol) * value - stepsize * slope_rtol * slope)

        def cond(carry):
            _, _, _, error, iteration = carry
            return ~(error <= atol) & (iteration <= max_backtracking_steps)

        def body(carry):
            stepsize, _, new_grad, _, iteration = carry
            stepsize = jnp.where(iteration > 0, decrease_factor * stepsize, stepsize).astype(dtype)
            candidate = add_scale(params, stepsize, updates)
            if store_grad:
                # One forward pass; the gradient is the transposed linearisation, formed only when accepted.
                new_value, jvp = jax.linearize(fn, candidate)
                error = decrease_error(stepsize, new_value)
                new_grad = jax.lax.cond((error <= atol) | (iteration == max_backtracking_steps),
                                        lambda p: gt.tree_cast_like(jax.linear_transpose(jvp, p)(
                                            jnp.ones([], new_value.dtype))[0], new_grad),
                                        lambda p: new_grad, candidate)
            else:
                new_value = fn(candidate)
                error = decrease_error(stepsize, new_value)
            return stepsize, jnp.asarray(new_value, dtype), new_grad, error.astype(dtype), iteration + 1

        first = jnp.minimum(increase_factor * state.learning_rate, max_learning_rate).astype(dtype)
        carry = (first, value, gt.tree_zeros_like(params), jnp.asarray(jnp.inf, dtype), gt.zero_count())
        stepsize, new_value, new_grad, error, iterations = jax.lax.while_loop(cond, body, carry)
        if verbose:
            jax.lax.cond(error > atol, lambda: jax.debug.print(
                "gradtx.scale_by_backtracking_linesearch: no step size with sufficient decrease found "
                "(value {v}, slope {s}, step size {t}, decrease error {e}); a 0 step is taken when the "
                "error is infinite.", v=value, s=slope, t=stepsize, e=error), lambda: None)
        stepsize = jnp.where(jnp.isinf(error), 0.0, stepsize).astype(dtype)
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=stepsize, value=new_value, grad=new_grad if store_grad else None,
            info=BacktrackingLinesearchInfo(num_linesearch_steps=iterations, decrease_error=error))
        return gt.tree_scale(stepsize, updates), new_state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- zoom (strong Wolfe, Nocedal & Wright 3.5/3.6)


class ZoomLinesearchInfo(NamedTuple):
    """Diagnostics of the last zoom search."""

    num_linesearch_steps: jax.Array  # shape=(), int32: trial step sizes evaluated
    decrease_error: jax.Array  # shape=(), value dtype: violation of sufficient decrease (0 = satisfied)
    curvature_error: jax.Array  # shape=(), value dtype: violation of the curvature condition (0 = satisfied)


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`."""

    learning_rate: jax.Array  # shape=(), value dtype: the accepted step size
    value: jax.Array  # shape=(), value dtype: f at the accepted point
    grad: Any  # like params: the gradient at the accepted point
    info: ZoomLinesearchInfo


class _Point(NamedTuple):
    """A trial step size on the line, with f, its gradient and its slope there."""

    stepsize: jax.Array
    value: jax.Array
    grad: Any
    slope: jax.Array


class _ZoomSearch(NamedTuple):
    """The running state of one zoom search."""

    count: jax.Array  # trials evaluated
    current: _Point  # the last trial
    decrease_error: jax.Array
    curvature_error: jax.Array
    interval_found: jax.Array  # phase 2 (zoom) once True
    done: jax.Array
    failed: jax.Array
    low: _Point  # the end of the interval with the lower value (grad=None)
    high: _Point  # the other end (grad=None)
    cubic_ref: jax.Array  # a third point for cubic interpolation
    value_cubic_ref: jax.Array
    safe: _Point  # the best trial with sufficient decrease, kept in case curvature fails (slope unused)


def _end(point: _Point) -> _Point:
    """An interval end: its gradient is not needed, so it is not carried."""
    return point._replace(grad=None)


def _cubic_minimizer(a, fa, fpa, b, fb, c, fc):
    """The critical point of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a (NaN if none)."""
    db, dc = b - a, c - a
    denom = (db * dc) ** 2 * (db - dc)
    rb, rc = fb - fa - fpa * db, fc - fa - fpa * dc
    cubic = (dc**2 * rb - db**2 * rc) / denom
    quad = (-(dc**3) * rb + db**3 * rc) / denom
    return a + (-quad + jnp.sqrt(quad * quad - 3.0 * cubic * fpa)) / (3.0 * cubic)


def _quadratic_minimizer(a, fa, fpa, b, fb):
    """The critical point of the quadratic through (a, fa), (b, fb) with slope fpa at a."""
    db = b - a
    curvature = (fb - fa - fpa * db) / (db**2)
    return a - fpa / (2.0 * curvature)


def scale_by_zoom_linesearch(max_linesearch_steps: Any, max_learning_rate: Any = None, tol: Any = 0.0,
                             increase_factor: Any = 2.0, slope_rtol: Any = 1e-4, curv_rtol: Any = 0.9,
                             approx_dec_rtol: Any = 1e-6, stepsize_precision: Any = 1e-5,
                             initial_guess_strategy: str = "keep", verbose: bool = False) -> GradientTransformation:
    r"""Line search for the strong Wolfe conditions by interval search and zoom (``optax.scale_by_zoom_linesearch``).

    Finds :math:`\eta` with sufficient decrease and small curvature,

    .. math::
        f(w + \eta u) \le f(w) + c_1 \eta \langle u, \nabla f(w) \rangle + \epsilon, \qquad
        |\langle \nabla f(w + \eta u), u \rangle| \le c_2 |\langle \nabla f(w), u \rangle| + \epsilon,

    first growing :math:`\eta` by ``increase_factor`` until an interval holding such a
    step is found, then shrinking that interval by cubic, quadratic or bisection steps
    (Algorithms 3.5 and 3.6 of Nocedal & Wright, 1999). Near a minimum the decrease
    criterion switches to Hager & Zhang's approximate one (CG_DESCENT, 2006,
    https://doi.org/10.1145/1132973.1132979): :math:`\langle \nabla f(w+\eta u), u\rangle \le
    (2c_1 - 1)\langle \nabla f(w), u\rangle` once :math:`f(w + \eta u) \le f(w) + c_3|f(w)|`.
    If the search fails, the best step with sufficient decrease is taken.

    ``update`` needs ``value``, ``grad`` and ``value_fn`` as extra keyword arguments
    (further ones are passed to ``value_fn``), and returns :math:`\eta u`.

    Args:
      max_linesearch_steps: the most trial step sizes.
      max_learning_rate: the cap on the step size, or None.
      tol: :math:`\epsilon`, the tolerance of both criteria.
      increase_factor: the growth factor of the interval search.
      slope_rtol: :math:`c_1`.
      curv_rtol: :math:`c_2` (``jnp.inf`` drops the curvature condition).
      approx_dec_rtol: :math:`c_3`; None keeps the plain Armijo criterion.
      stepsize_precision: below this interval length, a step with sufficient decrease is accepted.
      initial_guess_strategy: ``"keep"`` starts from the previous step size, ``"one"`` from 1
        (the choice for quasi-Newton directions).
      verbose: print a diagnostic when the search fails.
    """
    if initial_guess_strategy not in ("one", "keep"):
        raise ValueError(f"scale_by_zoom_linesearch: initial_guess_strategy must be 'one' or 'keep', "
                         f"got {initial_guess_strategy!r}")
    check_range("slope_rtol", slope_rtol, 0.0, 1.0, where="scale_by_zoom_linesearch")

    def decrease_error(stepsize, value, slope, value_init, slope_init):
        error = value - value_init - slope_rtol * stepsize * slope_init
        if approx_dec_rtol is not None:
            approx = jnp.maximum(slope - (2 * slope_rtol - 1.0) * slope_init,
                                 value - value_init - approx_dec_rtol * jnp.abs(value_init))
            error = jnp.minimum(approx, error)
        return _nan_to_inf(error)

    def curvature_error(slope, slope_init):
        return _nan_to_inf(jnp.abs(slope) - curv_rtol * jnp.abs(slope_init))

    def search(params, updates, value_init, grad_init, slope_init, stepsize_guess, value_and_grad):
        dtype = value_init.dtype

        def evaluate(stepsize):
            stepsize = stepsize.astype(dtype)
            value, grad = value_and_grad(add_scale(params, stepsize, updates))
            point = _Point(stepsize, jnp.asarray(value, dtype), gt.tree_cast_like(grad, updates),
                           real_vdot(_conj(grad), updates, dtype))
            dec = decrease_error(point.stepsize, point.value, point.slope, value_init, slope_init).astype(dtype)
            return point, dec, curvature_error(point.slope, slope_init).astype(dtype)

        def search_interval(s):
            prev = s.current
            stepsize = jnp.where(s.count == 0, stepsize_guess, increase_factor * prev.stepsize)
            if max_learning_rate is not None:
                reached_max = stepsize >= max_learning_rate
                stepsize = jnp.minimum(stepsize, max_learning_rate)
            else:
                reached_max = jnp.asarray(False)
            new, dec, curv = evaluate(stepsize)
            error = jnp.maximum(dec, curv)
            safe = _where(dec <= tol, new, s.safe)
            high_is_new = (dec > 0.0) | ((new.value >= prev.value) & (s.count > 0))
            low_is_new = (new.slope >= 0.0) & ~high_is_new
            new_end, prev_end = _end(new), _end(prev)
            low = _where(low_is_new, new_end, prev_end)
            high = _where(low_is_new, prev_end, new_end)
            found = high_is_new | low_is_new | (error <= tol)
            done = (error <= tol) | (reached_max & ~found)
            return _ZoomSearch(count=gt.safe_increment(s.count), current=new, decrease_error=dec,
                               curvature_error=curv, interval_found=found, done=done,
                               failed=(s.count + 1 >= max_linesearch_steps) & ~done, low=low, high=high,
                               cubic_ref=low.stepsize, value_cubic_ref=low.value, safe=safe)

        def zoom(s):
            low, high = s.low, s.high
            delta = jnp.abs(high.stepsize - low.stepsize)
            left, right = jnp.minimum(high.stepsize, low.stepsize), jnp.maximum(high.stepsize, low.stepsize)
            cubic = _cubic_minimizer(low.stepsize, low.value, low.slope, high.stepsize, high.value,
                                     s.cubic_ref, s.value_cubic_ref)
            use_cubic = (cubic > left + 0.2 * delta) & (cubic < right - 0.2 * delta)
            quad = _quadratic_minimizer(low.stepsize, low.value, low.slope, high.stepsize, high.value)
            use_quad = ~use_cubic & (quad > left + 0.1 * delta) & (quad < right - 0.1 * delta)
            middle = jnp.where(use_cubic, cubic, jnp.where(use_quad, quad, (low.stepsize + high.stepsize) / 2.0))
            new, dec, curv = evaluate(middle)
            error = jnp.maximum(dec, curv)
            safe = _where((dec <= tol) & (new.value < s.safe.value), new, s.safe)
            done = error <= tol
            high_is_new = (dec > 0.0) | (new.value >= low.value)
            high_is_low = (new.slope * (high.stepsize - low.stepsize) >= 0.0) & ~high_is_new
            new_high = _where(high_is_low, low, _where(high_is_new, _end(new), high))
            new_low = _where(high_is_new, low, _end(new))
            ref = _where(high_is_new | high_is_low, (high.stepsize, high.value), (low.stepsize, low.value))
            given_up = (s.count + 1 >= max_linesearch_steps) | ((delta <= stepsize_precision) & (safe.stepsize > 0.0))
            return _ZoomSearch(count=gt.safe_increment(s.count), current=new, decrease_error=dec,
                               curvature_error=curv, interval_found=s.interval_found, done=done,
                               failed=given_up & ~done, low=new_low, high=new_high, cubic_ref=ref[0],
                               value_cubic_ref=ref[1], safe=safe)

        def take_safe_step(s):
            # Curvature failed: fall back on the best step with sufficient decrease (or on 0 off the domain).
            use_safe = (s.safe.stepsize > 0.0) | jnp.isinf(s.decrease_error)
            if verbose:
                jax.debug.print("gradtx.scale_by_zoom_linesearch: the search failed (value {v}, slope {sl}, "
                                "step size {t}, decrease error {d}, curvature error {c}); taking step size {safe}.",
                                v=value_init, sl=slope_init, t=s.current.stepsize, d=s.decrease_error,
                                c=s.curvature_error, safe=jnp.where(use_safe, s.safe.stepsize, s.current.stepsize))
            return s._replace(current=_where(use_safe, s.safe, s.current))

        def step(s):
            s = jax.lax.cond(s.interval_found, zoom, search_interval, s)
            return jax.lax.cond(s.failed, take_safe_step, lambda x: x, s)

        zero = jnp.zeros([], dtype)
        start = _Point(zero, value_init, grad_init, slope_init)
        inf = jnp.asarray(jnp.inf, dtype)
        s = _ZoomSearch(count=gt.zero_count(), current=start, decrease_error=inf, curvature_error=inf,
                        interval_found=jnp.asarray(False), done=jnp.asarray(False), failed=jnp.asarray(False),
                        low=_end(start), high=_end(start), cubic_ref=zero, value_cubic_ref=value_init, safe=start)
        return jax.lax.while_loop(lambda s: ~(s.done | s.failed), step, s)

    def init(params):
        dtype = value_dtype(params)
        inf = lambda: jnp.asarray(jnp.inf, dtype)  # noqa: E731 - buffers of their own (a step donates each)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.asarray(1.0, dtype), value=inf(), grad=gt.tree_zeros_like(params),
            info=ZoomLinesearchInfo(num_linesearch_steps=gt.zero_count(), decrease_error=inf(), curvature_error=inf()))

    def update(updates, state, params=None, *, value, grad, value_fn, **extra_args):
        fn_kwargs = _split_fn_kwargs(value_fn, extra_args, "scale_by_zoom_linesearch")
        value_and_grad = functools.partial(jax.value_and_grad(value_fn), **fn_kwargs)
        dtype = state.value.dtype
        value = jnp.asarray(value, dtype)
        slope = real_vdot(updates, grad, dtype)  # optax pairs conj(u) with g here, g with u on the line
        guess = jnp.ones([], dtype) if initial_guess_strategy == "one" else state.learning_rate
        s = search(params, updates, value, gt.tree_cast_like(grad, updates), slope, guess, value_and_grad)
        new_grad = s.current.grad
        new_state = ScaleByZoomLinesearchState(
            learning_rate=s.current.stepsize, value=s.current.value, grad=new_grad,
            info=ZoomLinesearchInfo(num_linesearch_steps=s.count, decrease_error=s.decrease_error,
                                    curvature_error=s.curvature_error))
        return gt.tree_scale(s.current.stepsize, updates), new_state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- torch's strong-Wolfe search


def _torch_cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic Hermite interpolant of two points, clipped to ``bounds`` (torch's rule)."""
    if bounds is None:
        lo, hi = jnp.minimum(x1, x2), jnp.maximum(x1, x2)
    else:
        lo, hi = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    d2 = jnp.sqrt(jnp.where(d2_square >= 0, d2_square, 0.0))
    min_pos = jnp.where(x1 <= x2,
                        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
                        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)))
    return jnp.where(d2_square >= 0, jnp.minimum(jnp.maximum(min_pos, lo), hi), (lo + hi) / 2.0)


class _Bracket(NamedTuple):
    """Two trial points of torch's strong-Wolfe search: step sizes, values, gradients, slopes."""

    t: jax.Array  # (2,)
    f: jax.Array  # (2,)
    g: jax.Array  # (2, n)
    gtd: jax.Array  # (2,)

    def set(self, i, point):
        return _Bracket(*(a.at[i].set(b) for a, b in zip(self, point)))

    def get(self, i):
        return tuple(a[i] for a in self)


def _select(cond, x, y):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), x, y)


class _WolfeSearch(NamedTuple):
    """The running state of torch's strong-Wolfe search."""

    bracket: _Bracket  # extrapolating: [previous trial, last trial]; zooming: the bracket
    phase: jax.Array  # int32: 0 extrapolating, 1 zooming, 2 finished
    low: jax.Array  # int32: the bracket end with the lower value (zooming)
    done: jax.Array  # both conditions hold at bracket[low]
    insuf_progress: jax.Array  # the last zoom trial fell near an end of the bracket
    ls_iter: jax.Array  # int32: evaluations after the first (torch's ls_iter)


def strong_wolfe_search(value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]], x: jax.Array,
                        t: jax.Array, d: jax.Array, f: jax.Array, g: jax.Array, gtd: jax.Array, c1: Any = 1e-4,
                        c2: Any = 0.9, tolerance_change: Any = 1e-9, max_ls: Any = 25):
    r"""torch.optim.LBFGS's strong-Wolfe line search on a flat vector, as one ``jax.lax.while_loop``.

    Looks for :math:`t` along ``d`` from ``x`` with

    .. math::
        f(x + t d) \le f(x) + c_1 t\, g^\top d, \qquad |\nabla f(x + t d)^\top d| \le -c_2\, g^\top d,

    bracketing by extrapolation (cubic interpolation clipped to :math:`[t + 0.01(t - t_{prev}), 10t]`)
    and then zooming by cubic interpolation, moved 10% of the bracket away from its ends
    when progress stalls (torch's ``_strong_wolfe``, ported from minFunc's ``lswolfe``,
    including its quirk of testing :math:`f_{new} \ge f_{prev}` only from the third trial).
    Both phases share one loop so that the objective is traced once.

    Args:
      value_and_grad: ``x -> (f(x), grad f(x))`` on flat vectors.
      x: the start point (flat).
      t: the first trial step size.
      d: the search direction (flat).
      f, g, gtd: the value, gradient and slope :math:`g^\top d` at ``x``.
      c1, c2: the constants of the two conditions.
      tolerance_change: the bracket length (times :math:`\max|d|`) below which the search stops.
      max_ls: the most evaluations after the first.

    Returns:
      ``(f_new, g_new, t, evaluations)`` at the chosen step size.
    """
    dtype = x.dtype
    d_norm = jnp.max(jnp.abs(d))
    t0 = jnp.asarray(t, dtype)
    start = (jnp.zeros([], dtype), jnp.asarray(f, dtype), g, jnp.asarray(gtd, dtype))
    int32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731

    def armijo_fails(t, f_new):
        return f_new > f + c1 * t * gtd

    def lower_end(bracket):
        return int32(jnp.where(bracket.f[0] <= bracket.f[1], 0, 1))

    def extrapolation_trial(s):
        (t_prev, f_prev, _, gtd_prev), (t, f_new, _, gtd_new) = s.bracket.get(0), s.bracket.get(1)
        guess = _torch_cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                                         bounds=(t + 0.01 * (t - t_prev), t * 10))
        return jnp.where(s.ls_iter < 0, t0, guess).astype(dtype), s.insuf_progress

    def zoom_trial(s):
        b = s.bracket
        t = _torch_cubic_interpolate(b.t[0], b.f[0], b.gtd[0], b.t[1], b.f[1], b.gtd[1])
        t_max, t_min = jnp.max(b.t), jnp.min(b.t)
        eps = 0.1 * (t_max - t_min)
        near_end = jnp.minimum(t_max - t, t - t_min) < eps
        move = near_end & (s.insuf_progress | (t >= t_max) | (t <= t_min))
        t = jnp.where(move, jnp.where(jnp.abs(t - t_max) < jnp.abs(t - t_min), t_max - eps, t_min + eps), t)
        return t.astype(dtype), near_end & ~move

    def after_extrapolation(s, new):
        bracket = _Bracket(*(jnp.stack([a, b]) for a, b in zip(s.bracket.get(1), new)))
        t, f_new, _, gtd_new = new
        ls_iter = s.ls_iter + 1
        # torch checks a trial only while it may evaluate again; otherwise it falls back on [0, t].
        checked = ls_iter < max_ls
        fails = armijo_fails(t, f_new) | ((ls_iter > 1) & (f_new >= bracket.f[0]))
        wolfe = jnp.abs(gtd_new) <= -c2 * gtd
        bracketed = fails | (~wolfe & (gtd_new >= 0))
        exhausted = _Bracket(*(jnp.stack([a, b]) for a, b in zip(start, new)))
        bracket = _select(checked, _select(wolfe & ~fails, _Bracket(*(jnp.stack([b, b]) for b in new)), bracket),
                          exhausted)
        done = checked & wolfe & ~fails
        phase = jnp.where(checked & ~bracketed & ~done, 0, jnp.where(done | ~checked, 2, 1))
        return _WolfeSearch(bracket, int32(phase), lower_end(bracket), done, s.insuf_progress, ls_iter)

    def after_zoom(s, new):
        b, low = s.bracket, s.low
        high = 1 - low
        t, f_new, _, gtd_new = new
        worse = armijo_fails(t, f_new) | (f_new >= b.f[low])
        replaced_high = b.set(high, new)
        wolfe = jnp.abs(gtd_new) <= -c2 * gtd
        flip = ~wolfe & (gtd_new * (b.t[high] - b.t[low]) >= 0)
        replaced_low = _select(flip, b.set(high, b.get(low)), b).set(low, new)
        bracket = _select(worse, replaced_high, replaced_low)
        new_low = int32(jnp.where(worse, lower_end(bracket), low))
        return s._replace(bracket=bracket, low=new_low, done=~worse & wolfe, ls_iter=s.ls_iter + 1)

    def searching(s):
        too_small = jnp.abs(s.bracket.t[1] - s.bracket.t[0]) * d_norm < tolerance_change
        return (s.phase == 0) | ((s.phase == 1) & ~s.done & (s.ls_iter < max_ls) & ~too_small)

    def trial(s):
        zooming = s.phase == 1
        t, insuf_progress = _select(zooming, zoom_trial(s), extrapolation_trial(s))
        f_new, g_new = value_and_grad(x + t * d)
        g_new = jnp.asarray(g_new).astype(dtype)
        new = (t, jnp.asarray(f_new).astype(dtype), g_new, jnp.dot(g_new, d))
        s = s._replace(insuf_progress=insuf_progress)
        return _select(zooming, after_zoom(s, new), after_extrapolation(s, new))

    # ls_iter = -1 marks the first trial, at t; the previous point is the start.
    s = _WolfeSearch(bracket=_Bracket(*(jnp.stack([a, a]) for a in start)), phase=int32(0), low=int32(0),
                     done=jnp.asarray(False), insuf_progress=jnp.asarray(False), ls_iter=int32(-1))
    s = jax.lax.while_loop(searching, trial, s)
    t, f_new, g_new, _ = s.bracket.get(s.low)
    return f_new, g_new, t, s.ls_iter + 1
