"""One optimizer step, side by side: gradtx (facade tiers and functional), optax and torch.optim.

Run from the repository root::

    python -m benchmarks.step_time            # the full table (a 9-minute budget on 2 cores)
    python -m benchmarks.step_time --quick    # small sizes, a smoke run (about a minute)
    python -m benchmarks.step_time --optimizers Adam --dtypes float32 --sets "1 x 16M"
    python -m benchmarks.step_time --one-loop # the same under XLA:CPU's multi-output fusion (an XLA_FLAGS opt-in)

What one run measures, all in one process on one machine:

* one step of Adam, AdamW and SGD with momentum, for each implementation:
  the gradtx facade in its default tier (``fused``: one compiled program for
  all groups) and its ``foreach`` and for-loop tiers; gradtx's functional step
  inside a user's ``jax.jit`` with donated buffers; optax the same way; and
  torch.optim with ``fused=True``, ``foreach=True`` and the for-loop;
* on four parameter sets (one 16M-element tensor; 200 tensors of varied sizes
  totalling 16M; 2000 tensors of 1k elements; 100 tensors of 1k elements), in
  float32 and bfloat16;
* the machine's memory bandwidth (a large in-place axpy, torch's and XLA's, the
  faster one is the roofline; timed in every block's rounds, so that it is
  measured under the same load as the steps) and each step as a fraction of it: Adam reads
  param, grad, exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq — 28
  bytes per float32 parameter; SGD with momentum moves 20; bfloat16 half;
* the compile time of an Adam step over a 1000-tensor tree (gradtx functional,
  the gradtx facade's first step, optax);
* the peak memory of a donated Adam step as XLA accounts for it (arguments +
  outputs - aliased + temporaries), against params + grads + state.

Timing: within one block (a dtype, a parameter set, an optimizer) every
implementation is built and warmed up, then timed in interleaved rounds (one
step of each per round, each after a 20 ms pause), and the median is reported;
so a machine shared with other work slows all of them alike and the ratios stay
meaningful. torch's steps run in a child process that takes turns with this one
(in one process, XLA's and torch's thread pools slow each other down). The first
step of each implementation (its compilation) is timed separately.

Time budget: compiling a per-tensor program over 2000 tensors takes minutes on a
2-core CPU (see benchmarks/FINDINGS.md). An implementation whose first step on a
parameter set took longer than ``--max-first-step`` seconds is not built again on
that set for the later optimizers/dtypes, and a block that would end after
``--budget`` seconds (judged by the last block on the same set) is not started;
every skipped row says so in the table. The headline blocks (the first optimizer
and dtype, on every set) run first, then the sets that compile quickly.

Results go to ``benchmarks/results/`` (markdown table, JSON, and a plot).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = Path(__file__).parent / "results"
# float32; bfloat16 moves half. Prodigy makes two passes (its estimate d sums over every parameter first): the
# moments read p, p0, g, m, v, s and write m, v, s; the update reads p, m, v and writes p.
BYTES_PER_PARAM = {"Adam": 28, "AdamW": 28, "SGD": 20, "Prodigy": 52}
IMPLEMENTATIONS = (
    "gradtx facade (default)",
    "gradtx facade foreach",
    "gradtx facade for-loop",
    "gradtx facade (shared)",
    "gradtx functional jit (donated)",
    "optax jit (donated)",
    "torch fused",
    "torch foreach",
    "torch for-loop",
)
# "shared": the default tier over parameters another optimizer (SGD with momentum, stepped once) steps too
FACADE_TIERS = {"gradtx facade (default)": "default", "gradtx facade foreach": "foreach",
                "gradtx facade for-loop": "for-loop", "gradtx facade (shared)": "shared"}
# Every timed step starts after a short pause (the other process's threads go idle), then a small parallel
# operation of its own library wakes that library's thread pool, as the forward and backward passes of a
# training loop would have: torch's fused CPU kernels open an OpenMP region per tensor, and with its workers
# asleep torch's fused Adam over 100 x 1k took 300 ms instead of ~1 ms (see FINDINGS.md).
PAUSE_S = 0.02
ONE_LOOP_FLAG = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion"
PRIME_ELEMENTS = 1 << 18  # above both libraries' per-thread grain
TORCH_TIERS = {"torch fused": "fused", "torch foreach": "foreach", "torch for-loop": "for-loop"}


def parameter_sets(quick: bool) -> dict[str, list[int]]:
    """Named lists of tensor sizes (elements), the four sets the goals in docs/performance.md name (a quarter... a sixteenth of them in quick mode)."""
    total = 1 << 20 if quick else 16 << 20
    rng = np.random.default_rng(0)
    raw = rng.lognormal(mean=0.0, sigma=1.0, size=200)
    varied = np.maximum(1, (raw / raw.sum() * total).astype(int)).tolist()
    varied[-1] += total - sum(varied)
    return {
        f"1 x {total >> 20}M": [total],
        f"200 tensors, {total >> 20}M total": varied,
        f"{200 if quick else 2000} x 1k": [1024] * (200 if quick else 2000),
        "100 x 1k": [1024] * 100,
    }


def interleaved_medians(fns: dict[str, Callable[[], object]], *, warmup: int, repeats: int,
                        remote: TorchWorker | None = None) -> dict[str, float]:
    """Median milliseconds of each function, timed in rounds that run each once (so load hits all alike).

    ``remote`` times its own implementations (torch's, in a child process) once per
    round: the two processes take turns, never run together. The order rotates from
    round to round, so that no implementation always runs right after another's
    threads were busy.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    slots: list[str | None] = list(fns) + ([None] if remote is not None else [])
    prime = xla_prime()
    for round_ in range(warmup + repeats):
        shift = round_ % len(slots)
        for slot in slots[shift:] + slots[:shift]:
            if slot is None:
                times = remote.round()
            else:
                time.sleep(PAUSE_S)
                prime()
                start = time.perf_counter()
                fns[slot]()
                times = {slot: (time.perf_counter() - start) * 1e3}
            if round_ >= warmup:
                for name, ms in times.items():
                    samples.setdefault(name, []).append(ms)
    return {name: statistics.median(values) for name, values in samples.items() if values}


AXPY_ELEMENTS = {False: 32 << 20, True: 8 << 20}  # quick -> elements of the bandwidth probe
XLA_AXPY, TORCH_AXPY = "axpy (XLA)", "axpy (torch)"


def xla_axpy(elements: int) -> Callable[[], None]:
    """An in-place float32 ``y += a * x`` under jit, ``y`` donated: reads x and y, writes y (12 bytes/element)."""
    x = jnp.ones(elements, jnp.float32)
    box = [jnp.ones(elements, jnp.float32)]
    axpy = jax.jit(lambda y, x: y + 1e-3 * x, donate_argnums=0)

    def run() -> None:
        box[0] = axpy(box[0], x)
        box[0].block_until_ready()

    return run


def torch_axpy(elements: int) -> Callable[[], None]:
    """torch's in-place ``y.add_(x, alpha=a)`` (its CPU threads): 12 bytes/element."""
    import torch

    x = torch.rand(elements)
    y = torch.rand(elements)
    return lambda: y.add_(x, alpha=1e-3)


@functools.cache
def xla_prime() -> Callable[[], None]:
    """A small jitted loop that XLA splits over its threads: run before a timed step to wake the pool."""
    x = jnp.zeros(PRIME_ELEMENTS, jnp.float32)
    add = jax.jit(lambda x: x + 1.0)
    return lambda: add(x).block_until_ready()


def bandwidth_gbs(ms: dict[str, float], elements: int) -> dict[str, float]:
    """GB/s of the two axpy probes from their median times; the roofline is the faster."""
    result = {name: 12 * elements / (ms[key] * 1e-3) / 1e9 for name, key in (("torch", TORCH_AXPY), ("xla", XLA_AXPY))
              if key in ms}
    result["roofline"] = max(result.values())
    return result


def measure_bandwidth_gbs(elements: int = 32 << 20) -> dict[str, float]:
    """GB/s of a large in-place float32 axpy, torch's and XLA's, timed in interleaved rounds."""
    ms = interleaved_medians({TORCH_AXPY: torch_axpy(elements), XLA_AXPY: xla_axpy(elements)}, warmup=3, repeats=15)
    return bandwidth_gbs(ms, elements)


# --- the implementations: each returns a function that runs one step and blocks until it is done -------------


def torch_step(name: str, sizes: list[int], dtype: str, tier: str) -> Callable[[], None]:
    import torch

    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    params = [torch.zeros(n, dtype=tdtype, requires_grad=True) for n in sizes]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[tier]
    kwargs = {"lr": 1e-3, "momentum": 0.9} if name == "SGD" else {"lr": 1e-3}
    opt = getattr(torch.optim, name)(params, **kwargs, **flags)
    return opt.step  # CPU kernels run synchronously


class TorchWorker:
    """torch.optim's steps, built and timed in a child process.

    XLA's and torch's CPU thread pools in one process slow each other down: torch's
    fused Adam over 100 x 1k took ~1 ms alone and 15-800 ms when timed between
    XLA programs in the same process (see FINDINGS.md). In a child process, taking
    turns with this one, torch runs as it would in a torch program.
    """

    def __init__(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_torch_worker, args=(child,), daemon=True)
        self.process.start()

    def ask(self, *message: object) -> Any:
        self.conn.send(message)
        reply = self.conn.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def build(self, name: str, sizes: list[int], dtype: str, impls: list[str],
              axpy_elements: int = 0) -> tuple[dict, dict]:
        """Builds and runs once each tier and the bandwidth probe; returns ``({impl: first step s}, {impl: error})``."""
        return self.ask("build", name, sizes, dtype, impls, axpy_elements)

    def round(self) -> dict[str, float]:
        return self.ask("round")

    def close(self) -> None:
        self.conn.send(("stop",))
        self.process.join(timeout=30)


def _torch_worker(conn: Any) -> None:
    import torch

    fns: dict[str, Callable[[], None]] = {}
    prime = torch.zeros(PRIME_ELEMENTS)
    while True:
        message = conn.recv()
        try:
            if message[0] == "stop":
                return
            if message[0] == "build":
                _, name, sizes, dtype, impls, axpy_elements = message
                fns.clear()
                gc.collect()
                first, errors = {}, {}
                if axpy_elements:
                    fns[TORCH_AXPY] = torch_axpy(axpy_elements)
                for impl in impls:
                    start = time.perf_counter()
                    try:
                        fn = torch_step(name, sizes, dtype, TORCH_TIERS[impl])
                        fn()
                    except Exception as error:  # noqa: BLE001 - e.g. a dtype a tier lacks: reported as a row
                        errors[impl] = f"{type(error).__name__}: {str(error)[:70]}"
                        continue
                    first[impl] = time.perf_counter() - start
                    fns[impl] = fn
                conn.send((first, errors))
            elif message[0] == "round":
                times = {}
                for impl, fn in fns.items():
                    time.sleep(PAUSE_S)
                    prime.add_(1.0)
                    start = time.perf_counter()
                    fn()
                    times[impl] = (time.perf_counter() - start) * 1e3
                conn.send(times)
        except Exception as error:  # noqa: BLE001 - handed back to the parent
            conn.send(error)


def functional_step(library: str, name: str, sizes: list[int], dtype: str,
                    grads: list | None = None) -> Callable[[], None]:
    """One step of the library's alias inside a user's ``jax.jit``, params and state donated."""
    if library == "optax":
        import optax as lib
    else:
        import gradtx as lib
    alias = {"Adam": lambda: lib.adam(1e-3), "AdamW": lambda: lib.adamw(1e-3, weight_decay=1e-2),
             "SGD": lambda: lib.sgd(1e-3, momentum=0.9),
             "Prodigy": lambda: (lib.contrib if library == "optax" else lib).prodigy(1e-3)}[name]
    tx = alias()
    params = [jnp.zeros(n, dtype) for n in sizes]
    grads = grads if grads is not None else [jnp.full(n, 1e-3, dtype) for n in sizes]
    state = tx.init(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    box = {"params": params, "state": state}

    def run() -> None:
        box["params"], box["state"] = step(box["params"], box["state"], grads)
        jax.block_until_ready(box["params"])

    return run


def facade_optimizer(name: str, sizes: list[int], dtype: str, tier: str, grads: list | None = None) -> Any:
    from gradtx import optim

    cls = getattr(optim, name)
    flags = {"default": {}, "shared": {}, "fused": {"fused": True}, "foreach": {"foreach": True},
             "for-loop": {"foreach": False, "fused": False}}[tier]
    kwargs = {"lr": 1e-3, "momentum": 0.9} if name == "SGD" else {"lr": 1e-3}
    params = [optim.Parameter(jnp.zeros(n, dtype)) for n in sizes]
    grads = grads if grads is not None else [jnp.full(n, 1e-3, dtype) for n in sizes]
    for p, g in zip(params, grads):
        p.grad = g
    opt = cls(params, **kwargs, **flags)
    if tier == "shared":  # each optimizer keeps its own state of the parameters
        opt.neighbour = optim.SGD(params, lr=1e-3, momentum=0.9)
        opt.neighbour.step()
    return opt


def facade_step(name: str, sizes: list[int], dtype: str, tier: str, grads: list | None = None) -> Callable[[], None]:
    """One ``opt.step()`` of the facade, then every ``p.data`` read (as a training loop would)."""
    opt = facade_optimizer(name, sizes, dtype, tier, grads)
    params = [p for group in opt.param_groups for p in group["params"]]

    def run() -> None:
        opt.step()
        jax.block_until_ready([p.data for p in params])

    return run



def make_step(impl: str, name: str, sizes: list[int], dtype: str, grads: list) -> Callable[[], None]:
    if impl in FACADE_TIERS:
        return facade_step(name, sizes, dtype, FACADE_TIERS[impl], grads)
    if impl in TORCH_TIERS:
        return torch_step(name, sizes, dtype, TORCH_TIERS[impl])
    return functional_step("optax" if impl.startswith("optax") else "gradtx", name, sizes, dtype, grads)


def python_overhead(blocks: int = 40, steps: int = 25) -> dict[str, float]:
    """Milliseconds of a step over the 200-tensor set scaled down 1000x (about 80 elements a tensor, so that the
    program costs almost nothing): the facade's ``opt.step()`` plus the loop's reads of every ``p.data``, and the
    functional step; each the fastest of ``blocks`` blocks of ``steps`` steps, the two alternated. What the facade
    adds in Python per step is the difference."""
    sizes = [max(1, n // 1000) for n in parameter_sets(False)["200 tensors, 16M total"]]
    opt = facade_optimizer("Adam", sizes, "float32", "default")
    opt.pack_max_numel = 8  # the same tensors packed as in the full-size set (its 8 smallest)
    params = [p for group in opt.param_groups for p in group["params"]]

    def facade() -> None:
        opt.step()
        jax.block_until_ready([p.data for p in params])

    fns = {"facade": facade, "functional": functional_step("gradtx", "Adam", sizes, "float32")}
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        for _ in range(5):
            fn()
    for _ in range(blocks):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / steps * 1e3)
    return best


# --- compile time and memory --------------------------------------------------------------------------------


def compile_seconds(n_tensors: int = 1000) -> dict[str, float]:
    """Seconds to trace and compile one Adam step over ``n_tensors`` small tensors.

    For the functional libraries: ``jit(step).lower(...).compile()``; for the
    facade: its first ``step()`` (trace, compile and one run) minus a later step.
    """
    import optax

    import gradtx

    shapes = [(i % 7 + 1, 16) for i in range(n_tensors)]
    result = {}
    for label, lib in (("gradtx functional", gradtx), ("optax", optax)):
        tx = lib.adam(1e-3)
        params = [jnp.zeros(s, jnp.float32) for s in shapes]
        state = tx.init(params)

        def step(params, state, grads, tx=tx):
            updates, state = tx.update(grads, state, params)
            return jax.tree.map(jnp.add, params, updates), state

        start = time.perf_counter()
        jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
        result[label] = time.perf_counter() - start
    try:
        from gradtx import optim

        params = [optim.Parameter(jnp.zeros(s, jnp.float32)) for s in shapes]
        for p in params:
            p.grad = jnp.full(p.shape, 1e-3, jnp.float32)
        opt = optim.Adam(params, lr=1e-3)
        start = time.perf_counter()
        opt.step()
        jax.block_until_ready([p.data for p in params])
        first = time.perf_counter() - start
        start = time.perf_counter()
        opt.step()
        jax.block_until_ready([p.data for p in params])
        result["gradtx facade"] = first - (time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - reported, not fatal
        result["gradtx facade"] = float("nan")
        print(f"facade compile time not measured: {error}")
    return result


def _analysis_bytes(compiled: Any) -> float:
    a = compiled.memory_analysis()
    return float(a.argument_size_in_bytes + a.output_size_in_bytes - a.alias_size_in_bytes + a.temp_size_in_bytes)


def peak_bytes(sizes: list[int], dtype: str) -> dict[str, dict[str, float]]:
    """XLA's memory accounting of one donated Adam step, against params + grads + exp_avg + exp_avg_sq.

    The facade's figure is that of the program its default tier runs (captured
    from :mod:`gradtx.optim._engine` during one step).
    """
    import optax

    import gradtx

    itemsize = jnp.dtype(dtype).itemsize
    needed = 4 * sum(sizes) * itemsize
    out = {}
    for label, lib in (("gradtx functional", gradtx), ("optax", optax)):
        tx = lib.adam(1e-3)
        params = [jax.ShapeDtypeStruct((n,), dtype) for n in sizes]
        state = jax.eval_shape(tx.init, params)

        def step(params, state, grads, tx=tx):
            updates, state = tx.update(grads, state, params)
            return jax.tree.map(jnp.add, params, updates), state

        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
        out[label] = _analysis_bytes(compiled)
    try:
        out["gradtx facade"] = _facade_program_bytes(sizes, dtype)
    except Exception as error:  # noqa: BLE001 - the engine's internals may change; reported, not fatal
        print(f"facade memory not measured: {error}")
    return {label: {"peak_bytes": b, "needed_bytes": float(needed), "ratio": b / needed} for label, b in out.items()}


def _facade_program_bytes(sizes: list[int], dtype: str, name: str = "Adam") -> float:
    """The peak of the facade's step: every buffer its programs take and give back once, plus the largest
    temporary of one program (they run one after another)."""
    from gradtx.optim import _engine

    captured = []
    original = _engine.program

    def spy(donate: bool, spread: bool = False, mixed_packs: bool = False) -> Callable:
        program = original(donate, spread, mixed_packs)

        def call(*args: object) -> object:
            captured.append((program, jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x, args)))
            return program(*args)

        call.trace = program.trace  # the engine traces each new signature before any program runs
        return call

    _engine.program = spy
    try:
        opt = facade_optimizer(name, sizes, dtype, "default")
        opt.step()
        captured.clear()
        opt.step()  # the programs of a step with state (the first step passes placeholders)
    finally:
        _engine.program = original
    analyses = [program.lower(*args).compile().memory_analysis() for program, args in captured]
    held = sum(a.argument_size_in_bytes + a.output_size_in_bytes - a.alias_size_in_bytes for a in analyses)
    return float(held + max(a.temp_size_in_bytes for a in analyses))


# --- the run --------------------------------------------------------------------------------------------------


def run(quick: bool, optimizers: list[str], dtypes: list[str], repeats: int, *, sets: list[str] | None = None,
        impls: tuple[str, ...] = IMPLEMENTATIONS, budget: float | None = None,
        max_first_step: float | None = None) -> dict:
    """Times every block and returns the results (see :func:`to_markdown`); the keyword defaults follow ``quick``."""
    budget = budget if budget is not None else (240.0 if quick else 540.0)
    max_first_step = max_first_step if max_first_step is not None else (20.0 if quick else 30.0)
    start_all = time.perf_counter()
    warmup = 2
    bandwidth = measure_bandwidth_gbs(AXPY_ELEMENTS[quick])
    print(f"bandwidth: {bandwidth}", flush=True)
    axpy = xla_axpy(AXPY_ELEMENTS[quick])
    all_sets = parameter_sets(quick)
    compile_n = 200 if quick else 1000
    compile_s = compile_seconds(compile_n)
    print(f"compile seconds over {compile_n} tensors: {compile_s}", flush=True)
    memory = peak_bytes(next(iter(all_sets.values())), "float32")
    memory_small = peak_bytes(all_sets["100 x 1k"], "float32")  # where the facade packs its parameters
    # AdamW's chain reads the parameters: a pack's concatenated parameters are a temporary too
    adamw_small = (_facade_program_bytes(all_sets["100 x 1k"], "float32", "AdamW")
                   / memory_small["gradtx facade"]["needed_bytes"]) if "gradtx facade" in memory_small else None
    print(f"peak memory: {memory}; on 100 x 1k: {memory_small}; the facade's AdamW on 100 x 1k: {adamw_small}",
          flush=True)
    chosen = {k: v for k, v in all_sets.items() if sets is None or k in sets}
    rows: list[dict] = []
    too_slow: dict[tuple[str, str], str] = {}  # (set, impl) -> why it is not built again
    block_seconds: dict[str, float] = {}  # set -> wall time of its last block, to keep within the budget
    local_impls = [i for i in impls if i not in TORCH_TIERS]
    torch_impls = [i for i in impls if i in TORCH_TIERS]
    worker = TorchWorker() if torch_impls else None
    blocks = [(dtype, name, set_name) for dtype in dtypes for name in optimizers for set_name in chosen]
    # The headline block (first dtype and optimizer) on every set comes first, then the sets that compile
    # quickly, then the rest: when the budget runs out, what is skipped is the slowest to compile.
    names = list(chosen)

    def priority(block: tuple[str, str, str]) -> tuple[int, int]:
        dtype, name, set_name = block
        if dtype == dtypes[0] and name == optimizers[0]:
            return (0, 0)
        many = len(chosen[set_name]) > 1 and set_name != names[-1]
        return (2 if many else 1, 0)

    try:
        for dtype, name, set_name in sorted(blocks, key=priority):
            sizes = chosen[set_name]
            total = sum(sizes)
            base = dict(dtype=dtype, set=set_name, optimizer=name)
            if time.perf_counter() - start_all + block_seconds.get(set_name, 0.0) > budget:
                rows += [dict(base, impl=impl, error=f"not run: it would end past the {budget:.0f} s budget")
                         for impl in impls]
                continue
            block_start = time.perf_counter()
            grads = [jnp.full(n, 1e-3, dtype) for n in sizes]
            fns, first = {}, {}
            for impl in local_impls:
                if "for-loop" in impl and quick and len(sizes) > 500:
                    continue
                if (set_name, impl) in too_slow:
                    rows.append(dict(base, impl=impl, error=too_slow[set_name, impl]))
                    continue
                t0 = time.perf_counter()
                try:
                    fn = make_step(impl, name, sizes, dtype, grads)
                    fn()
                except Exception as error:  # noqa: BLE001 - a peer without this dtype/tier is reported
                    rows.append(dict(base, impl=impl, error=f"{type(error).__name__}: {str(error)[:70]}"))
                    continue
                first[impl] = time.perf_counter() - t0
                fns[impl] = fn
                if first[impl] > max_first_step:
                    too_slow[set_name, impl] = f"not rebuilt: first step took {first[impl]:.0f} s ({name} {dtype})"
            wanted = [i for i in torch_impls if not ("for-loop" in i and quick and len(sizes) > 500)]
            fns[XLA_AXPY] = axpy
            if worker is not None:
                torch_first, torch_errors = worker.build(name, sizes, dtype, wanted, AXPY_ELEMENTS[quick])
                first.update(torch_first)
                rows += [dict(base, impl=impl, error=error) for impl, error in torch_errors.items()]
            medians = interleaved_medians(fns, warmup=warmup, repeats=repeats, remote=worker)
            # The roofline of this block: the bandwidth probes ran in the same rounds, under the same load.
            block_bandwidth = bandwidth_gbs(medians, AXPY_ELEMENTS[quick])
            moved = BYTES_PER_PARAM[name] * total * (0.5 if dtype == "bfloat16" else 1.0)
            for impl, ms in medians.items():
                if impl in (XLA_AXPY, TORCH_AXPY):
                    continue
                rows.append(dict(base, impl=impl, ms=ms, first_step_s=first[impl],
                                 bandwidth_gbs=block_bandwidth["roofline"],
                                 roofline=(moved / (ms * 1e-3) / 1e9) / block_bandwidth["roofline"]))
                print(f"{dtype:8s} {set_name:24s} {name:5s} {impl:32s} {ms:10.3f} ms   "
                      f"(first step {first[impl]:6.2f} s)", flush=True)
            del fns, grads
            gc.collect()
            block_seconds[set_name] = time.perf_counter() - block_start
    finally:
        if worker is not None:
            worker.close()
    order = {impl: k for k, impl in enumerate(IMPLEMENTATIONS)}
    rows.sort(key=lambda r: (dtypes.index(r["dtype"]), optimizers.index(r["optimizer"]), names.index(r["set"]),
                             order[r["impl"]]))
    return dict(
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(), jax=jax.__version__,
                     backend=jax.default_backend(), xla_flags=os.environ.get("XLA_FLAGS", "")),
        bandwidth_gbs=bandwidth["roofline"],
        bandwidth_detail=bandwidth,
        rows=rows,
        compile_tensors=compile_n,
        compile_seconds=compile_s,
        memory_set=next(iter(all_sets)), memory_small=memory_small,
        memory=memory, memory_small_facade_adamw=adamw_small,
        wall_seconds=time.perf_counter() - start_all,
    )


# --- output ---------------------------------------------------------------------------------------------------


def to_markdown(result: dict) -> str:
    bw = result["bandwidth_detail"]
    lines = [f"Machine: {result['machine']}.",
             f"Measured bandwidth (in-place float32 axpy): torch {bw['torch']:.1f} GB/s, XLA {bw['xla']:.1f} GB/s; "
             f"roofline {bw['roofline']:.1f} GB/s at the start; each row's roofline uses the bandwidth measured in "
             f"its own block. Wall time of the run: {result['wall_seconds']:.0f} s.", ""]
    lines += ["| dtype | parameter set | optimizer | implementation | ms/step | x torch fused | facade / functional "
              "| roofline | first step (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["dtype"], r["set"], r["optimizer"], r["impl"]): r["ms"] for r in result["rows"] if "ms" in r}
    for r in result["rows"]:
        key = (r["dtype"], r["set"], r["optimizer"])
        if "ms" not in r:
            lines.append(f"| {r['dtype']} | {r['set']} | {r['optimizer']} | {r['impl']} | n/a ({r['error']}) "
                         "| | | | |")
            continue
        ref = by_key.get(key + ("torch fused",))
        speed = f"{ref / r['ms']:.2f}" if ref else ""
        functional = by_key.get(key + ("gradtx functional jit (donated)",))
        own = f"{r['ms'] / functional:.2f}" if functional and r["impl"].startswith("gradtx facade") else ""
        lines.append(f"| {r['dtype']} | {r['set']} | {r['optimizer']} | {r['impl']} | {r['ms']:.3f} | {speed} | "
                     f"{own} | {r['roofline']:.0%} | {r['first_step_s']:.2f} |")
    c = result["compile_seconds"]
    lines += ["", f"Compile time of an Adam step over a {result['compile_tensors']}-tensor tree: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in c.items())
              + f" (gradtx facade / optax: {c.get('gradtx facade', float('nan')) / c['optax']:.2f}; "
              f"gradtx functional / optax: {c['gradtx functional'] / c['optax']:.2f})."]
    lines += ["", f"Peak memory of a donated Adam step on {result['memory_set']} float32, XLA's accounting "
              "(arguments + outputs - aliased + temporaries) / (params + grads + exp_avg + exp_avg_sq): "
              + ", ".join(f"{k} {m['ratio']:.3f}" for k, m in result["memory"].items()) + "; on 100 x 1k "
              "(the facade's packed gradients are a temporary of the step): "
              + ", ".join(f"{k} {m['ratio']:.3f}" for k, m in result.get("memory_small", {}).items()) + "."]
    if result.get("memory_small_facade_adamw") is not None:
        lines[-1] = lines[-1][:-1] + (f"; the facade's AdamW step on 100 x 1k, whose chain reads the parameters (their "
                                      f"concatenation is a temporary too): {result['memory_small_facade_adamw']:.3f}.")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "ms" in r and r["optimizer"] == "Adam" and r["dtype"] == "float32"]
    if not rows:
        return
    sets = list(dict.fromkeys(r["set"] for r in rows))
    impls = [i for i in IMPLEMENTATIONS if any(r["impl"] == i for r in rows)]
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 4), sharey=False)
    for ax, set_name in zip(np.atleast_1d(axes), sets):
        values = [next((r["ms"] for r in rows if r["set"] == set_name and r["impl"] == i), np.nan) for i in impls]
        colors = ["tab:blue" if i.startswith("gradtx") else "tab:green" if i.startswith("optax") else "tab:orange"
                  for i in impls]
        bars = ax.barh(impls, values, color=colors)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7, padding=2)
        ax.set_xlim(0, np.nanmax(values) * 1.25)
        ax.set_title(set_name, fontsize=9)
        ax.set_xlabel("ms per Adam step (float32)")
        ax.invert_yaxis()
    for ax in np.atleast_1d(axes)[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--optimizers", nargs="+", default=["Adam", "AdamW", "SGD"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--sets", nargs="+", default=None, help="parameter set names (default: all four)")
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per block (default 9; quick 5)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of the whole run; blocks that would end later are skipped (default 540; quick 240)")
    parser.add_argument("--max-first-step", type=float, default=None,
                        help="an implementation whose first step on a set took longer is not rebuilt on that set "
                             "(default 30; quick 20)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one-loop", action="store_true",
                        help="run under XLA:CPU's multi-output fusion (XLA_FLAGS), where the facade's fused tier "
                             "updates each buffer in one loop; results go to *-one-loop.*")
    parser.add_argument("--python-overhead", action="store_true",
                        help="only time what the facade's step adds in Python (see python_overhead) and exit")
    args = parser.parse_args()
    if args.python_overhead:
        best = python_overhead()
        print(f"facade {best['facade']:.3f} ms, functional {best['functional']:.3f} ms a step "
              f"(200 tensors of about 80 elements; fastest of 40 blocks)")
        return
    if args.one_loop and ONE_LOOP_FLAG not in os.environ.get("XLA_FLAGS", ""):
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + ONE_LOOP_FLAG).strip())
        raise SystemExit(subprocess.call([sys.executable, "-m", "benchmarks.step_time", *sys.argv[1:]], env=env))
    result = run(args.quick, args.optimizers, args.dtypes, args.repeats or (5 if args.quick else 9), sets=args.sets,
                 impls=tuple(args.impls), budget=args.budget, max_first_step=args.max_first_step)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("quick" if args.quick else "full") + ("-one-loop" if args.one_loop else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    table = to_markdown(result)
    (args.out / f"{stem}.md").write_text(table + "\n")
    plot(result, args.out / f"{stem}.png")
    print("\n" + table)


if __name__ == "__main__":
    main()
