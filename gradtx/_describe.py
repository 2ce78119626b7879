"""Readable descriptions of transformations: ``repr`` in a terminal, an HTML listing in Jupyter.

A transformation is a pair of closures, and the closures already hold what a
reader wants to see: the factory that made them (the closures' qualified name,
``scale_by_adam.<locals>.update``) and the hyperparameters they captured
(``b1``, ``b2``, ``eps``) including the members of a chain or the inner
transformation of a wrapper. Reading them at display time needs no bookkeeping
in the factories, so every transformation describes itself, optax's included.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

_SCALARS = (int, float, complex, bool, str, type(None))


def _is_transformation(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(callable(v) for v in value) and hasattr(value, "init")


def _factory_name(tx: Any) -> str:
    qualname = getattr(tx.update, "__qualname__", "") or getattr(tx.init, "__qualname__", "")
    return qualname.split(".<locals>")[0].split(".")[-1] if "<locals>" in qualname else type(tx).__name__


def _captured(tx: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for fn in (tx.init, tx.update):
        code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
        if code is None or cells is None:
            continue
        for name, cell in zip(code.co_freevars, cells):
            try:
                found.setdefault(name, cell.cell_contents)
            except ValueError:  # an empty cell
                continue
    return found


def _defaults(name: str) -> dict[str, Any]:
    """The defaults of the gradtx factory called ``name`` (values equal to them are not shown)."""
    import inspect

    import gradtx

    factory = getattr(gradtx, name, None)
    if not callable(factory):
        return {}
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and odd objects are simply shown
        return False


def describe(tx: Any) -> tuple[str, dict[str, Any], list[tuple[str, Any]]]:
    """``(factory name, {hyperparameter: value}, [(label, member transformation), ...])`` of a transformation.

    Hyperparameters equal to the factory's defaults are left out.
    """
    captured = _captured(tx)
    if _factory_name(tx) == "with_extra_args_support" and _is_transformation(captured.get("tx")):
        return describe(captured["tx"])
    defaults = _defaults(_factory_name(tx))
    plain: dict[str, Any] = {}
    members: list[tuple[str, Any]] = []
    for name, value in captured.items():
        if name in defaults and _same(value, defaults[name]):
            continue
        if name.startswith("_"):
            continue
        if _is_transformation(value):
            members.append((name, value))
        elif isinstance(value, (tuple, list)) and value and all(_is_transformation(v) for v in value):
            members += [(name, v) for v in value]
        elif isinstance(value, dict) and value and all(_is_transformation(v) for v in value.values()):
            members += [(str(k), v) for k, v in value.items()]
        elif isinstance(value, _SCALARS) or (hasattr(value, "shape") and np.shape(value) == ()):
            plain[name] = value
        elif isinstance(value, tuple) and all(isinstance(v, _SCALARS) for v in value):
            plain[name] = value
        elif callable(value) and "<locals>" not in getattr(value, "__qualname__", "<locals>"):
            plain[name] = value  # a schedule or a user function
        elif callable(value) and getattr(value, "__name__", "") == "<lambda>":
            plain[name] = value
    return _factory_name(tx), plain, members


def _short(value: Any) -> str:
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if hasattr(value, "shape"):
        return repr(np.asarray(value).item())
    return repr(value)


def format_text(tx: Any, indent: int = 0) -> str:
    """A multi-line, indented description: ``chain(scale_by_adam(b1=0.9, ...), ...)``."""
    name, plain, members = describe(tx)
    args = ", ".join(f"{k}={_short(v)}" for k, v in sorted(plain.items()))
    if not members:
        return f"{name}({args})"
    pad = "  " * (indent + 1)
    lines = [pad + (f"{label}: " if name in ("multi_transform", "partition", "named_chain") else "")
             + format_text(member, indent + 1) for label, member in members]
    tail = f",\n{pad}{args}" if args else ""
    return f"{name}(\n" + ",\n".join(lines) + tail + f"\n{'  ' * indent})"


def format_html(tx: Any) -> str:
    """An HTML listing of the steps with their hyperparameters, for Jupyter."""
    name, plain, members = describe(tx)
    rows = "".join(
        f"<tr><td style='text-align:left'>{html.escape(k)}</td><td style='text-align:left'>"
        f"{html.escape(_short(v))}</td></tr>" for k, v in sorted(plain.items())
    )
    table = f"<table>{rows}</table>" if rows else ""
    steps = "".join(f"<li>{format_html(member)}</li>" for _, member in members)
    listing = f"<ol>{steps}</ol>" if steps else ""
    return f"<b>{html.escape(name)}</b>{table}{listing}"
