"""One optimizer step, side by side: gradtx (facade tiers and functional), optax and torch.optim.

Run from the repository root::

    python -m benchmarks.step_time            # the full table (a few minutes on 2 cores)
    python -m benchmarks.step_time --quick    # small sizes, a smoke run

Every figure is the median of several timed steps after warm-up, all in one
process on one machine, so the ratios between libraries are meaningful even on
a noisy machine. The machine's memory bandwidth is measured in the same run
(a large in-place axpy) and each step is also shown as a fraction of the
bandwidth roofline: Adam reads param, grad, exp_avg, exp_avg_sq and writes
param, exp_avg, exp_avg_sq — 28 bytes per float32 parameter; SGD with momentum
moves 20. Results go to ``benchmarks/results/`` (markdown table, JSON, and a plot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = Path(__file__).parent / "results"
BYTES_PER_PARAM = {"Adam": 28, "AdamW": 28, "SGD": 20}  # float32; bfloat16 moves half


def parameter_sets(quick: bool) -> dict[str, list[int]]:
    """Named lists of tensor sizes (elements), as issue 6 specifies."""
    total = 1 << 20 if quick else 16 << 20
    rng = np.random.default_rng(0)
    raw = rng.lognormal(mean=0.0, sigma=1.0, size=200)
    varied = np.maximum(1, (raw / raw.sum() * total).astype(int)).tolist()
    varied[-1] += total - sum(varied)
    return {
        f"1 x {total >> 20}M": [total],
        f"200 tensors, {total >> 20}M total": varied,
        "2000 x 1k": [1024] * (200 if quick else 2000),
        "100 x 1k": [1024] * 100,
    }


def median_time(fn: Callable[[], object], *, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds; ``fn`` must block until its work is done."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def measure_bandwidth_gbs(elements: int = 32 << 20) -> float:
    """GB/s of a large in-place float32 axpy ``y += a * x`` (reads x and y, writes y: 12 bytes/element)."""
    import torch

    x = torch.rand(elements)
    y = torch.rand(elements)
    ms = median_time(lambda: y.add_(x, alpha=1e-3), warmup=3, repeats=10)
    return 12 * elements / (ms * 1e-3) / 1e9


# --- torch ---------------------------------------------------------------------------------------------------


def torch_step(name: str, sizes: list[int], dtype: str, tier: str) -> Callable[[], None]:
    import torch

    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    params = [torch.zeros(n, dtype=tdtype, requires_grad=True) for n in sizes]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    flags = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}[tier]
    kwargs = dict(lr=1e-3, momentum=0.9) if name == "SGD" else dict(lr=1e-3)
    opt = getattr(torch.optim, name)(params, **kwargs, **flags)
    return lambda: opt.step()


# --- optax and gradtx functional, inside a user's jit with donated buffers ------------------------------------


def functional_step(library: str, name: str, sizes: list[int], dtype: str) -> Callable[[], None]:
    if library == "optax":
        import optax as lib
    else:
        import gradtx as lib
    alias = {"Adam": lambda: lib.adam(1e-3), "AdamW": lambda: lib.adamw(1e-3, weight_decay=1e-2),
             "SGD": lambda: lib.sgd(1e-3, momentum=0.9)}[name]
    tx = alias()
    params = [jnp.zeros(n, dtype) for n in sizes]
    grads = [jnp.full(n, 1e-3, dtype) for n in sizes]
    state = tx.init(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    box = {"params": params, "state": state}

    def run():
        box["params"], box["state"] = step(box["params"], box["state"], grads)
        jax.block_until_ready(box["params"])

    return run


# --- gradtx facade -----------------------------------------------------------------------------------------


def facade_step(name: str, sizes: list[int], dtype: str, tier: str) -> Callable[[], None] | None:
    try:
        from gradtx import optim
    except ImportError:
        return None
    cls = getattr(optim, name, None)
    if cls is None:
        return None
    flags = {"default": {}, "fused": dict(fused=True), "foreach": dict(foreach=True),
             "for-loop": dict(foreach=False, fused=False)}[tier]
    kwargs = dict(lr=1e-3, momentum=0.9) if name == "SGD" else dict(lr=1e-3)
    params = [optim.Parameter(jnp.zeros(n, dtype)) for n in sizes]
    grads = [jnp.full(n, 1e-3, dtype) for n in sizes]
    for p, g in zip(params, grads):
        p.grad = g
    opt = cls(params, **kwargs, **flags)

    def run():
        opt.step()
        jax.block_until_ready([p.data for p in params])

    return run


def compile_seconds(library: str, n_tensors: int = 1000) -> float:
    """Trace + compile time of one Adam step over ``n_tensors`` small tensors."""
    import optax

    import gradtx

    lib = optax if library == "optax" else gradtx
    tx = lib.adam(1e-3)
    params = [jnp.zeros((i % 7 + 1, 16), jnp.float32) for i in range(n_tensors)]
    state = tx.init(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return jax.tree.map(jnp.add, params, updates), state

    start = time.perf_counter()
    jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    return time.perf_counter() - start


def peak_bytes(sizes: list[int], dtype: str) -> dict[str, float]:
    """XLA's own memory accounting of a donated functional Adam step, against params + grads + state."""
    import gradtx

    tx = gradtx.adam(1e-3)
    params = [jnp.zeros(n, dtype) for n in sizes]
    state = tx.init(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return jax.tree.map(jnp.add, params, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    analysis = compiled.memory_analysis()
    itemsize = jnp.dtype(dtype).itemsize
    needed = 4 * sum(sizes) * itemsize  # params, grads, exp_avg, exp_avg_sq
    peak = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
            + analysis.temp_size_in_bytes)
    return {"peak_bytes": float(peak), "needed_bytes": float(needed), "ratio": peak / needed}


def run(quick: bool, optimizers: list[str], dtypes: list[str], repeats: int) -> dict:
    warmup = 2 if quick else 3
    bandwidth = measure_bandwidth_gbs(8 << 20 if quick else 32 << 20)
    rows = []
    for dtype in dtypes:
        for set_name, sizes in parameter_sets(quick).items():
            total = sum(sizes)
            for name in optimizers:
                candidates = {
                    "gradtx facade (default)": lambda: facade_step(name, sizes, dtype, "default"),
                    "gradtx facade foreach": lambda: facade_step(name, sizes, dtype, "foreach"),
                    "gradtx facade for-loop": lambda: facade_step(name, sizes, dtype, "for-loop"),
                    "gradtx functional jit": lambda: functional_step("gradtx", name, sizes, dtype),
                    "optax jit (donated)": lambda: functional_step("optax", name, sizes, dtype),
                    "torch fused": lambda: torch_step(name, sizes, dtype, "fused"),
                    "torch foreach": lambda: torch_step(name, sizes, dtype, "foreach"),
                    "torch for-loop": lambda: torch_step(name, sizes, dtype, "for-loop"),
                }
                for impl, make in candidates.items():
                    if "for-loop" in impl and len(sizes) > 500 and quick:
                        continue
                    try:
                        fn = make()
                    except Exception as error:  # noqa: BLE001 - a peer without this dtype/tier is reported, not fatal
                        rows.append(dict(dtype=dtype, set=set_name, optimizer=name, impl=impl, error=str(error)[:80]))
                        continue
                    if fn is None:
                        continue
                    ms = median_time(fn, warmup=warmup, repeats=repeats)
                    moved = BYTES_PER_PARAM[name] * total * (0.5 if dtype == "bfloat16" else 1.0)
                    rows.append(dict(dtype=dtype, set=set_name, optimizer=name, impl=impl, ms=ms,
                                     roofline=(moved / (ms * 1e-3) / 1e9) / bandwidth))
                    print(f"{dtype:8s} {set_name:28s} {name:5s} {impl:26s} {ms:9.3f} ms", flush=True)
    first_set = next(iter(parameter_sets(quick).values()))
    return dict(
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(), jax=jax.__version__,
                     backend=jax.default_backend()),
        bandwidth_gbs=bandwidth,
        rows=rows,
        compile_seconds={lib: compile_seconds(lib, 200 if quick else 1000) for lib in ("gradtx", "optax")},
        memory=peak_bytes(first_set, "float32"),
    )


def to_markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}, measured bandwidth {result['bandwidth_gbs']:.1f} GB/s.", ""]
    lines += ["| dtype | parameter set | optimizer | implementation | ms/step | x torch fused | roofline |",
              "|---|---|---|---|---|---|---|"]
    fused = {(r["dtype"], r["set"], r["optimizer"]): r["ms"] for r in result["rows"]
             if r["impl"] == "torch fused" and "ms" in r}
    for r in result["rows"]:
        if "ms" not in r:
            lines.append(f"| {r['dtype']} | {r['set']} | {r['optimizer']} | {r['impl']} | n/a ({r['error']}) | | |")
            continue
        ref = fused.get((r["dtype"], r["set"], r["optimizer"]))
        speed = f"{ref / r['ms']:.2f}" if ref else ""
        lines.append(f"| {r['dtype']} | {r['set']} | {r['optimizer']} | {r['impl']} | {r['ms']:.3f} | {speed} | "
                     f"{r['roofline']:.0%} |")
    c = result["compile_seconds"]
    m = result["memory"]
    lines += ["", f"Compile time of an Adam step over a 1000-tensor tree: gradtx {c['gradtx']:.2f} s, "
                  f"optax {c['optax']:.2f} s (ratio {c['gradtx'] / c['optax']:.2f}).",
              f"Peak memory of a donated Adam step (XLA's accounting): {m['ratio']:.3f} x "
              f"(params + grads + state)."]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "ms" in r and r["optimizer"] == "Adam" and r["dtype"] == "float32"]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 4), sharey=False)
    for ax, set_name in zip(np.atleast_1d(axes), sets):
        values = [next((r["ms"] for r in rows if r["set"] == set_name and r["impl"] == i), np.nan) for i in impls]
        ax.barh(impls, values)
        ax.set_title(set_name, fontsize=9)
        ax.set_xlabel("ms per Adam step (float32)")
        ax.invert_yaxis()
    for ax in np.atleast_1d(axes)[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--optimizers", nargs="+", default=["Adam", "AdamW", "SGD"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.quick, args.optimizers, args.dtypes, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "full"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    table = to_markdown(result)
    (args.out / f"{stem}.md").write_text(table + "\n")
    plot(result, args.out / f"{stem}.png")
    print("\n" + table)


if __name__ == "__main__":
    main()
