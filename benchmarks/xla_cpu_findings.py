"""The experiments behind benchmarks/FINDINGS.md: how XLA:CPU compiles an Adam step, and what packing buys.

Run from the repository root::

    python -m benchmarks.xla_cpu_findings              # every experiment (a few minutes on 2 cores)
    python -m benchmarks.xla_cpu_findings fusions      # one of: fusions, fusion-timing, packing, dispatch,
                                                       # runtime-scalars

``fusions`` and ``fusion-timing`` run twice, in child processes, without and with
``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion`` (XLA
reads its flags once per process). Every timing is a median of interleaved rounds
within one process, reported with its ratio to torch's fused Adam in that process.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

MOF = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion"
B1, B2, LR, EPS = 0.9, 0.999, 1e-3, 1e-8


def _medians(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[k].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def _report(title: str, med: dict[str, float], ref: str = "torch fused") -> None:
    print(title)
    for k, v in med.items():
        print(f"  {k:34s} {v:9.3f} ms   {ref}/this = {med[ref] / v:5.2f}")


# --- Adam written three ways over one flat buffer -----------------------------------------------------------


def _moments(mu, nu, g):
    return B1 * mu + (1 - B1) * g, B2 * nu + (1 - B2) * (g * g)


def _corrections(count):
    import jax.numpy as jnp

    c = (count + 1).astype(jnp.float32)
    return 1 - B1**c, 1 - B2**c


def _new_param(p, mu, nu, bc1, bc2):
    import jax.numpy as jnp

    return p - LR * (mu / bc1) / (jnp.sqrt(nu / bc2) + EPS)


def adam_plain(p, mu, nu, g, count):
    """The usual formulation: p' reads mu' and nu' (XLA: a loop per output, or two with multi-output fusion)."""
    mu2, nu2 = _moments(mu, nu, g)
    return _new_param(p, mu2, nu2, *_corrections(count)), mu2, nu2, count + 1


def adam_recomputed(p, mu, nu, g, count, keep):
    """p' recomputes mu' and nu' from the inputs, so that its loop is a *sibling* of theirs (same operands).

    ``keep`` is a runtime True: ``where(keep, x, 0)`` is x, but XLA can neither fold it
    nor merge the recomputation with the first one (CSE), so the three outputs are
    three sibling loops over the same inputs, which multi-output fusion merges into one.
    """
    import jax.numpy as jnp

    mu2, nu2 = _moments(mu, nu, g)
    mu3, nu3 = _moments(*(jnp.where(keep, x, 0) for x in (mu, nu, g)))
    return _new_param(p, mu3, nu3, *_corrections(count)), mu2, nu2, count + 1


def _big_fusions(compiled_text: str, n: int) -> list[str]:
    out = []
    for line in compiled_text.splitlines():
        if re.search(r"= .*fusion\(", line) and f"[{n}]" in line.split("fusion(")[0]:
            name = line.split("=")[0].strip()
            outputs = line.split("=")[1].split("fusion(")[0].count(f"[{n}]")
            parts = re.search(r'outer_dimension_partitions":\["(\d+)"', line)
            out.append(f"{name}: {outputs} output(s), threads={parts.group(1) if parts else 1}")
    return out


def fusions(n: int = 16 << 20) -> None:
    """The loop fusions XLA:CPU emits for an Adam step over one n-element leaf (gradtx, optax, hand-written)."""
    import jax
    import jax.numpy as jnp
    import optax

    import gradtx

    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    for label, lib in (("gradtx.adam", gradtx), ("optax.adam", optax)):
        tx = lib.adam(LR)
        p = [jax.ShapeDtypeStruct((n,), jnp.float32)]
        s = jax.eval_shape(tx.init, p)

        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return jax.tree.map(jnp.add, p, u), s

        text = jax.jit(step, donate_argnums=(0, 1)).lower(p, s, p).compile().as_text()
        print(f"  {label}: {_big_fusions(text, n)}")
    x = jax.ShapeDtypeStruct((n,), jnp.float32)
    c = jax.ShapeDtypeStruct((), jnp.int32)
    for label, fn, extra in (("plain", adam_plain, ()), ("recomputed", adam_recomputed,
                                                         (jax.ShapeDtypeStruct((), jnp.bool_),))):
        text = jax.jit(fn, donate_argnums=(0, 1, 2)).lower(x, x, x, x, c, *extra).compile().as_text()
        copies = len(re.findall(r"= f32\[\d+\]\S* copy\(", text))
        print(f"  hand-written {label}: {_big_fusions(text, n)}; full-size copies: {copies}")


def fusion_timing(n: int = 16 << 20, rounds: int = 21) -> None:
    """torch fused vs gradtx functional vs the two hand-written formulations, one n-element leaf."""
    import jax
    import jax.numpy as jnp
    import torch

    import gradtx

    def hand(fn, extra=()):
        step = jax.jit(fn, donate_argnums=(0, 1, 2))
        box = [jnp.zeros(n), jnp.zeros(n), jnp.zeros(n), jnp.zeros((), jnp.int32)]
        g = jnp.full(n, 1e-3)

        def run():
            box[0], box[1], box[2], box[3] = step(box[0], box[1], box[2], g, box[3], *extra)
            box[0].block_until_ready()

        return run

    tx = gradtx.adam(LR)
    def functional_update(p, s, g):
        u, s = tx.update(g, s, p)
        return p + u, s

    fstep = jax.jit(functional_update, donate_argnums=(0, 1))
    fbox = [jnp.zeros(n), tx.init(jnp.zeros(n))]
    g = jnp.full(n, 1e-3)

    def functional():
        fbox[0], fbox[1] = fstep(fbox[0], fbox[1], g)
        fbox[0].block_until_ready()

    tp = torch.zeros(n, requires_grad=True)
    tp.grad = torch.full_like(tp, 1e-3)
    topt = torch.optim.Adam([tp], lr=LR, fused=True)
    med = _medians({"torch fused": topt.step, "gradtx functional jit (donated)": functional,
                    "hand-written plain": hand(adam_plain),
                    "hand-written recomputed": hand(adam_recomputed, (jnp.asarray(True),))}, rounds)
    _report(f"Adam over 1 x {n} float32, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", med)


def packing(p_count: int = 2000, size: int = 1024, rounds: int = 9) -> None:
    """P tensors of `size` elements: per-leaf programs vs state and params packed in one flat buffer."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import gradtx
    from benchmarks.step_time import facade_step, functional_step, torch_step

    sizes = [size] * p_count
    total = sum(sizes)
    offsets = np.cumsum([0] + sizes)
    tx = gradtx.adam(LR)

    def update(flat_p, state, flat_g):
        u, state = tx.update(flat_g, state, flat_p)
        return flat_p + u, state

    def pack(xs):
        return jnp.concatenate([x.reshape(-1) for x in xs])

    def unpack(flat):
        return [flat[a:b] for a, b in itertools.pairwise(offsets)]

    packed_given = jax.jit(update, donate_argnums=(0, 1))
    packed_concat = jax.jit(lambda p, s, gs: update(p, s, pack(gs)), donate_argnums=(0, 1))
    unpack_all = jax.jit(unpack)
    grads = [jnp.full(n, 1e-3) for n in sizes]
    flat_g = pack(grads)

    def packed(kind):
        box = [jnp.zeros(total), tx.init(jnp.zeros(total))]

        def run():
            if kind == "flat grads":
                box[0], box[1] = packed_given(box[0], box[1], flat_g)
            else:
                box[0], box[1] = packed_concat(box[0], box[1], grads)
            if kind == "concat grads + slice params":
                jax.block_until_ready(unpack_all(box[0]))
            box[0].block_until_ready()

        return run

    fns = {"torch fused": torch_step("Adam", sizes, "float32", "fused"),
           "gradtx facade (default)": facade_step("Adam", sizes, "float32", "default"),
           "gradtx functional jit (donated)": functional_step("gradtx", "Adam", sizes, "float32"),
           "packed: flat grads": packed("flat grads"),
           "packed: concat grads": packed("concat grads"),
           "packed: concat grads + slice params": packed("concat grads + slice params")}
    first = {}
    for k, fn in fns.items():
        start = time.perf_counter()
        fn()
        first[k] = time.perf_counter() - start
    med = _medians(fns, rounds)
    _report(f"Adam over {p_count} x {size} float32", med)
    print("  first call (s, compile included): " + ", ".join(f"{k} {v:.2f}" for k, v in first.items()))


def dispatch(counts: tuple[int, ...] = (10, 100, 1000, 4000), rounds: int = 15) -> None:
    """Cost of one jitted call that takes and returns `k` small arrays (k (1,) float32 -> k outputs)."""
    import jax
    import jax.numpy as jnp

    def runner(k: int) -> Callable[[], None]:
        step = jax.jit(lambda xs: [x + 1 for x in xs], donate_argnums=0)
        box = [[jnp.zeros(1) for _ in range(k)]]

        def run() -> None:
            box[0] = step(box[0])
            jax.block_until_ready(box[0])

        return run

    for k in counts:
        ms = _medians({"call": runner(k)}, rounds)["call"]
        print(f"  jitted call with {k:5d} array inputs and outputs: {ms:8.3f} ms ({ms / k * 1e3:6.2f} us per array)")


def _moment_constant(ms, gs, b):
    del b
    return [m * B1 + g * (1 - B1) for m, g in zip(ms, gs)]


def _moment_argument(ms, gs, b):
    return [m * b + g * (1 - b) for m, g in zip(ms, gs)]


def runtime_scalars(rounds: int = 61) -> None:
    """One moment update, ``m * b + g * (1 - b)``, with ``b`` a constant and ``b`` an argument of the program.

    Over the sizes of ``step_time``'s 200-tensor set (lognormal, nearly all odd),
    then over those sizes rounded down to multiples of 64; ``m`` donated.
    XLA:CPU splits a loop fusion into parallel parts and guards each element of a
    part with a bound check when the length does not divide evenly. With a
    constant, LLVM vectorizes the guarded loop with masked loads; an argument is a
    scalar load inside the guard, and the loop stays scalar (its LLVM IR, from
    ``XLA_FLAGS=--xla_dump_to=DIR``, has no vector instructions). The facade passes
    its options to its programs as arguments (a scheduler never recompiles them).
    """
    import jax
    import jax.numpy as jnp

    from benchmarks.step_time import parameter_sets

    odd = parameter_sets(False)["200 tensors, 16M total"]
    for label, sizes in (("as they are", odd), ("multiples of 64", [max(64, n // 64 * 64) for n in odd])):
        grads = [jnp.ones(n, jnp.float32) for n in sizes]
        fns = {}
        for name, fn in (("b a constant", _moment_constant), ("b an argument", _moment_argument)):
            step = jax.jit(fn, donate_argnums=(0,))
            box = [[jnp.zeros(n, jnp.float32) for n in sizes]]

            def run(step=step, box=box) -> None:
                box[0] = step(box[0], grads, B1)
                jax.block_until_ready(box[0])

            fns[name] = run
        med = _medians(fns, rounds)
        print(f"  200 tensors, 16M total, {label}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items())
              + f" (argument / constant {med['b an argument'] / med['b a constant']:.2f})")


EXPERIMENTS = {"fusions": fusions, "fusion-timing": fusion_timing, "packing": packing, "dispatch": dispatch,
               "runtime-scalars": runtime_scalars}
PER_FLAGS = ("fusions", "fusion-timing")


def main() -> None:
    names = sys.argv[1:] or list(EXPERIMENTS)
    for name in names:
        if name in PER_FLAGS and "GRADTX_FINDINGS_CHILD" not in os.environ:
            for flags in ("", MOF):
                env = dict(os.environ, XLA_FLAGS=flags, GRADTX_FINDINGS_CHILD="1")
                subprocess.run([sys.executable, "-m", "benchmarks.xla_cpu_findings", name], env=env, check=True)
            continue
        print(f"== {name}", flush=True)
        EXPERIMENTS[name]()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
