"""Muon: momentum orthogonalised by a Newton–Schulz iteration, in optax's and torch's forms.

Muon (Jordan et al., 2024, https://kellerjordan.github.io/posts/muon/) replaces each
matrix update :math:`G = U S V^\\top` by an approximation of :math:`U V^\\top`, computed
with a few steps of a quintic Newton–Schulz iteration. optax and torch differ in three
places, all options here:

- the momentum: optax's is a bias-corrected EMA (:func:`scale_by_muon`); torch's is
  an EMA without correction whose Nesterov form is ``lerp(g, buf, momentum)``
  (``chain(scale(1 - momentum), trace(momentum, nesterov))`` reproduces it);
- the first normalisation: optax divides by ``norm + eps``, torch by ``max(norm, eps)``
  (``eps_mode``);
- the arithmetic: optax iterates in the update's dtype; torch always iterates in
  bfloat16, whatever the parameter's dtype (``compute_dtype=jnp.bfloat16``, below).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation, stateless

__all__ = [
    "MuonDimensionNumbers",
    "MuonState",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_newton_schulz",
    "scale_by_shape",
]

DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_COEFFS_PRESETS = {
    "standard": DEFAULT_NS_COEFFS,
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


def resolve_ns_coeffs(ns_coeffs: Any) -> Any:
    """The coefficients themselves, given coefficients or a preset name (``"standard"``, ``"dion"``)."""
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFFS_PRESETS:
            raise ValueError(f"Unknown Newton-Schulz coefficient preset {ns_coeffs!r}; "
                             f"known presets are {sorted(NS_COEFFS_PRESETS)}")
        return NS_COEFFS_PRESETS[ns_coeffs]
    return ns_coeffs


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight are the matrix's (``optax.contrib.MuonDimensionNumbers``).

    With :math:`y = x W`, the reduction (input) axes come first and the output axes
    second; every other axis is a batch axis, orthogonalised independently. torch's
    ``(out, in)`` weights are ``MuonDimensionNumbers(reduction_axis=1, output_axis=0)``.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


def _is_dims(x: Any) -> bool:
    return isinstance(x, MuonDimensionNumbers)


def _axes(x: jax.Array, dims: MuonDimensionNumbers) -> tuple[tuple[int, ...], tuple[int, ...]]:
    as_tuple = lambda a: (a,) if isinstance(a, int) else tuple(a)
    reduction = tuple(a % x.ndim for a in as_tuple(dims.reduction_axis))
    output = tuple(a % x.ndim for a in as_tuple(dims.output_axis))
    return reduction, output


def _fans(x: jax.Array, dims: MuonDimensionNumbers | None) -> tuple[int, int]:
    reduction, output = _axes(x, dims or MuonDimensionNumbers())
    return math.prod(x.shape[a] for a in reduction), math.prod(x.shape[a] for a in output)


def _as_batched_matrices(x: jax.Array, dims: MuonDimensionNumbers) -> tuple[jax.Array, Callable]:
    """``x`` as a ``(batch, reduction, output)`` stack, and the function that undoes it."""
    if x.ndim < 2:
        raise ValueError(f"Muon orthogonalises arrays of rank >= 2, got shape {x.shape}; route vectors and "
                         "scalars elsewhere (gradtx.muon sends them to AdamW)")
    reduction, output = _axes(x, dims)
    if set(reduction) & set(output):
        raise ValueError(f"reduction axes {reduction} and output axes {output} must be disjoint (shape {x.shape})")
    batch = tuple(sorted(set(range(x.ndim)) - set(reduction) - set(output)))
    order = batch + reduction + output
    sizes = lambda axes: tuple(x.shape[a] for a in axes)
    flat = (math.prod(sizes(batch)), math.prod(sizes(reduction)), math.prod(sizes(output)))
    inverse = tuple(sorted(range(x.ndim), key=lambda i: order[i]))
    unflat = sizes(batch) + sizes(reduction) + sizes(output)
    return x.transpose(order).reshape(flat), lambda y: y.reshape(unflat).transpose(inverse)


def _ns_step(x: jax.Array, coeffs: jax.Array, first: str | None, eps: Any, rounded: Callable,
             mm: Callable, torch_order: bool) -> jax.Array:
    r"""One quintic step :math:`X \leftarrow aX + (bA + cA^2)X`, :math:`A = XX^H`.

    ``rounded`` is applied where torch's bfloat16 kernels round (after each matmul or
    ``addmm``), whose products it also follows (``torch_order``); ``first`` selects
    optax's AOL / Schatten-4 rescaling of the first step.
    """
    a = rounded(mm(x, x.T.conj()))
    if first == "aol":
        s = jax.lax.rsqrt(jnp.clip(jnp.abs(a).sum(axis=-1), min=eps))[:, None]
        x, a = x * s, a * s * s.T
    elif first == "schatten":
        s = jax.lax.rsqrt(jnp.clip(jnp.linalg.norm(a, ord="fro"), min=eps))
        x, a = x * s, a * s**2
    if torch_order:  # torch's addmm(A, A, A, beta=b, alpha=c): b*A + c*(A@A)
        b = rounded(coeffs[1] * a + coeffs[2] * mm(a, a))
    else:  # optax's (c*A)@A
        b = coeffs[1] * a + mm(coeffs[2] * a, a)
    return rounded(coeffs[0] * x + mm(b, x))


def orthogonalize_via_newton_schulz(x: jax.Array, ns_coeffs: Any = DEFAULT_NS_COEFFS, ns_steps: int = 5,
                                    preconditioning: str = "frobenius", eps: Any = 1e-8,
                                    dimension_numbers: MuonDimensionNumbers | None = None, *,
                                    compute_dtype: Any = None, eps_mode: str = "add") -> jax.Array:
    r"""Approximates the orthogonal factor :math:`UV^\top` of :math:`X = USV^\top` by Newton–Schulz.

    .. math::
        X_0 = X / (\lVert X \rVert_F + \epsilon), \qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \quad A_k = X_k X_k^H

    on the wide orientation of :math:`X` (transposed when it has more rows than columns).
    The coefficients maximise the slope at zero, so the singular values land near 1
    rather than on it, which is what Muon wants. Follows
    ``optax.contrib.orthogonalize_via_newton_schulz`` by default.

    Args:
      x: a matrix, or an array with ``dimension_numbers`` saying which axes form the matrix.
      ns_coeffs: ``(a, b, c)``, or an ``(n, 3)`` array giving each of ``n`` steps its own.
      ns_steps: the number of steps (with ``(3,)`` coefficients).
      preconditioning: how :math:`X_0` is scaled: ``"frobenius"`` (above), ``"spectral"``
        (by :math:`\lVert X\rVert_2`), ``"aol"`` (Boissin et al., 2025,
        https://arxiv.org/abs/2512.04632) or ``"schatten"`` (Grishina et al., 2025,
        https://arxiv.org/abs/2506.10935), the last two rescaling inside the first step.
      eps: keeps the first division finite.
      dimension_numbers: see :class:`MuonDimensionNumbers`; required unless ``x`` is 2-D.
      compute_dtype: ``None`` iterates in ``x``'s dtype (optax). ``jnp.bfloat16`` reproduces
        torch.optim.Muon: ``x`` is rounded to bfloat16, every matmul and ``addmm``
        accumulates in float32 and rounds its result to bfloat16, as torch's CPU kernels
        do; the result is returned in ``x``'s dtype (holding bfloat16 values).
      eps_mode: ``"add"`` divides by :math:`\lVert X\rVert + \epsilon` (optax), ``"clamp"``
        by :math:`\max(\lVert X\rVert, \epsilon)` (torch).
    """
    if preconditioning not in PRECONDITIONINGS:
        raise ValueError(f"Unknown preconditioning {preconditioning!r}; choose one of {PRECONDITIONINGS}")
    if eps_mode not in ("add", "clamp"):
        raise ValueError(f"eps_mode must be 'add' or 'clamp', got {eps_mode!r}")
    if x.ndim != 2 and not _is_dims(dimension_numbers):
        raise ValueError(f"orthogonalize_via_newton_schulz needs a matrix (or dimension_numbers naming the axes "
                         f"that form one), got shape {x.shape}; route vectors and scalars to another optimizer "
                         "(gradtx.muon sends them to AdamW)")
    coeffs = jnp.asarray(ns_coeffs)
    if coeffs.ndim > 2 or coeffs.shape[-1] != 3:
        raise ValueError(f"Newton-Schulz coefficients must have shape (3,) or (n, 3), got {coeffs.shape}")
    dims = MuonDimensionNumbers() if x.ndim == 2 else dimension_numbers
    out_dtype = x.dtype

    if compute_dtype is None:
        work, rounded = x.dtype, (lambda y: y)
        mm = jnp.matmul
    else:  # accumulate in float32 (or wider), round to compute_dtype where torch's kernels do
        work = jnp.promote_types(compute_dtype, jnp.float32)
        rounded = lambda y: y.astype(compute_dtype).astype(work)
        mm = lambda p, q: jnp.matmul(p, q, precision=jax.lax.Precision.HIGHEST)

    def one(m):
        m = rounded(m.astype(work))  # from float64, torch also rounds via float32
        transposed = m.shape[0] > m.shape[1]
        if transposed:
            m = m.T
        if preconditioning in ("frobenius", "spectral"):
            norm = jnp.linalg.norm(m, ord="fro" if preconditioning == "frobenius" else 2)
            norm = rounded(norm)
            m = rounded(m / (norm + eps if eps_mode == "add" else jnp.maximum(norm, rounded(jnp.asarray(eps, work)))))
        c = coeffs.astype(work)
        steps = [c] * ns_steps if c.ndim == 1 else list(c)
        for i, ci in enumerate(steps):
            first = preconditioning if i == 0 and preconditioning in ("aol", "schatten") else None
            m = _ns_step(m, ci, first, eps, rounded, mm, compute_dtype is not None)
        return (m.T if transposed else m).astype(out_dtype)

    flat, unflatten = _as_batched_matrices(x, dims)
    return unflatten(jax.vmap(one)(flat))


def _resolve_dims(weight_dimension_numbers: Any, updates: Any) -> Any:
    return weight_dimension_numbers(updates) if callable(weight_dimension_numbers) else weight_dimension_numbers


def _map_with_dims(f: Callable, updates: Any, dims_tree: Any) -> Any:
    """``f(leaf, dims)`` over the updates; ``dims_tree`` is ``None`` (2-D leaves), one
    :class:`MuonDimensionNumbers` for every leaf, or a tree like the updates."""
    if dims_tree is None or _is_dims(dims_tree):
        return gt.tree_map(lambda u: f(u, dims_tree), updates)
    return gt.tree_map(f, updates, dims_tree)


def _per_matrix(f: Callable, weight_dimension_numbers: Any) -> GradientTransformation:
    """The stateless transform ``u -> f(u, dims)`` for each leaf and its dimension numbers."""
    return stateless(lambda updates, params: _map_with_dims(
        f, updates, _resolve_dims(weight_dimension_numbers, updates)))


def scale_by_newton_schulz(ns_coeffs: Any = DEFAULT_NS_COEFFS, ns_steps: int = 5, eps: Any = 1e-8, *,
                           preconditioning: str = "frobenius", weight_dimension_numbers: Any = None,
                           compute_dtype: Any = None, eps_mode: str = "add") -> GradientTransformation:
    r"""Replaces each matrix update by its Newton–Schulz orthogonalisation; keeps no state.

    .. math:: u \leftarrow \text{NS}_k(u)

    See :func:`orthogonalize_via_newton_schulz` for the arguments. With
    ``compute_dtype=jnp.bfloat16, eps_mode="clamp", eps=1e-7`` it is the orthogonalisation
    of torch.optim.Muon (``torch.optim._muon._zeropower_via_newtonschulz``).

    Args:
      weight_dimension_numbers: ``None`` (every leaf is a matrix), one
        :class:`MuonDimensionNumbers` for every leaf, a tree of them like the updates, or a
        function of the updates returning either.
    """
    return _per_matrix(lambda u, d: orthogonalize_via_newton_schulz(
        u, ns_coeffs, ns_steps, preconditioning, eps, d, compute_dtype=compute_dtype, eps_mode=eps_mode),
        weight_dimension_numbers)


def scale_by_shape(weight_dimension_numbers: Any = None, consistent_rms: Any = None, *,
                   clamp: bool = True) -> GradientTransformation:
    r"""Scales each matrix update by a factor of its shape (``optax.contrib.scale_by_shape``).

    .. math::
        u \leftarrow \sqrt{\max(1, n_{out}/n_{in})}\; u \quad\text{or}\quad
        u \leftarrow \rho \sqrt{\max(n_{in}, n_{out})}\; u

    The first (``consistent_rms=None``) is Muon's width scaling; the second gives every
    matrix update the RMS :math:`\rho` (Liu et al., 2025, https://arxiv.org/abs/2502.16982).
    torch.optim.Muon's ``adjust_lr_fn`` is these with torch's ``(out, in)`` layout:
    ``"original"``/``None`` the first with ``MuonDimensionNumbers(1, 0)``,
    ``"match_rms_adamw"`` the second with :math:`\rho = 0.2`, and torch 2.15's
    ``"spectral_unclamped"`` the first without the clamp, :math:`\sqrt{n_{out}/n_{in}}`
    (``clamp=False``; smaller than 1 for wide updates).

    Args:
      weight_dimension_numbers: as in :func:`scale_by_newton_schulz`.
      consistent_rms: ``None`` or :math:`\rho`.
      clamp: with ``consistent_rms=None``, keep the factor at least 1 (default True).
    """

    def factor(u, dims):
        fan_in, fan_out = _fans(u, dims)
        if consistent_rms is None:
            return jnp.sqrt(jnp.maximum(1, fan_out / fan_in) if clamp else fan_out / fan_in)
        return jnp.sqrt(jnp.maximum(fan_in, fan_out)) * consistent_rms

    return _per_matrix(lambda u, d: (factor(u, d) * u).astype(u.dtype), weight_dimension_numbers)


class MuonState(NamedTuple):
    """State of :func:`scale_by_muon` (the layout of optax's ``MuonState``)."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params (in mu_dtype): the momentum
    ns_coeffs: jax.Array  # shape=(3,) or (n, 3), the widest params' real dtype: the coefficients in use


def scale_by_muon(ns_coeffs: Any = DEFAULT_NS_COEFFS, ns_steps: int = 5, beta: Any = 0.95, eps: Any = 1e-8,
                  mu_dtype: Any = None, *, nesterov: bool = True, adaptive: bool = False,
                  preconditioning: str = "frobenius", weight_dimension_numbers: Any = None
                  ) -> GradientTransformation:
    r"""Muon's direction: orthogonalised, bias-corrected momentum (``optax.contrib.scale_by_muon``).

    .. math::
        m_t = \beta m_{t-1} + (1-\beta) g_t, \quad
        \hat m_t = \begin{cases}
            \beta\, \frac{m_t}{1-\beta^{t+1}} + (1-\beta)\frac{g_t}{1-\beta^t} & \text{nesterov} \\
            m_t / (1-\beta^t) & \text{otherwise} \end{cases}, \quad
        u_t = \text{NS}_k(\hat m_t)

    (Jordan et al., 2024, https://kellerjordan.github.io/posts/muon/). With ``adaptive``,
    :math:`u_t \leftarrow \langle \hat m_t, u_t\rangle\, u_t` (Bernstein & Newhouse, 2024,
    https://arxiv.org/abs/2409.20325). torch.optim.Muon's momentum has no bias correction:
    see :func:`gradtx.optim.chains.muon_chain`.

    Args:
      ns_coeffs: ``(a, b, c)`` or an ``(n, 3)`` sequence (then at most ``ns_steps`` rows, the last used).
      ns_steps: Newton–Schulz iterations.
      beta: momentum decay (a float, an array or a schedule of the step count).
      eps: see :func:`orthogonalize_via_newton_schulz`.
      mu_dtype: dtype of the momentum buffer (``None``: the params').
      nesterov: Nesterov momentum, as above.
      adaptive: scale by the dual norm, as above.
      preconditioning: see :func:`orthogonalize_via_newton_schulz`.
      weight_dimension_numbers: as in :func:`scale_by_newton_schulz`.
    """
    check_range("beta", beta, 0.0, 1.0, where="scale_by_muon")

    def init(params):
        floats = [x for x in gt.array_leaves(params) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
        dtype = jnp.result_type(*(gt.real_dtype(x) for x in floats)) if floats else jnp.float32
        coeffs = jnp.asarray(ns_coeffs, dtype)  # in the widest params' dtype, so float32 state stays float32
        if coeffs.ndim > 2 or coeffs.shape[-1] != 3:
            raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got {coeffs.shape}")
        if coeffs.ndim == 2:
            if coeffs.shape[0] > ns_steps:
                raise ValueError(f"{coeffs.shape[0]} rows of ns_coeffs are more than ns_steps={ns_steps}")
            coeffs = coeffs[-ns_steps:]
        return MuonState(count=gt.zero_count(), mu=gt.tree_zeros_like(params, mu_dtype), ns_coeffs=coeffs)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        dims = _resolve_dims(weight_dimension_numbers, updates)
        decay = value_at(beta, state.count)
        mu = gt.update_moment(updates, state.mu, decay, 1)
        count = gt.safe_increment(state.count)
        if nesterov:
            mu_hat = gt.tree_map(lambda m, g: decay * m + (1 - decay) * g,
                                 gt.bias_correction(mu, decay, gt.safe_increment(count)),
                                 gt.bias_correction(updates, decay, count))
        else:
            mu_hat = gt.bias_correction(mu, decay, count)
        orth = lambda u, d: orthogonalize_via_newton_schulz(
            u, state.ns_coeffs, ns_steps, preconditioning, eps, d)
        out = _map_with_dims(orth, mu_hat, dims)
        if adaptive:
            out = gt.tree_map(lambda m, o: jnp.sum(m.conj() * o) * o, mu_hat, out)
        return out, MuonState(count=count, mu=gt.tree_cast(mu, mu_dtype), ns_coeffs=state.ns_coeffs)

    return GradientTransformation(init, update)
