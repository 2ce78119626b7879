"""The first step over thousands of small tensors: the gradtx facade against optax, every first-order facade optimizer.

Run from the repository root::

    python -m benchmarks.many_leaves                      # 2,000 and 10,000 leaves, every optimizer
    python -m benchmarks.many_leaves --leaves 2000 --optimizers NAdam Adafactor

What one run measures: for each facade optimizer and each tree (``--leaves``
leaves of shape ``--shape``, float32), the wall time of building the optimizer
and taking its first step (tracing, compiling and running it: what a user waits
for before training starts), and the process's peak resident memory; and the
same for the optax optimizer that computes the same rule (``optax.nadam`` for
``NAdam``...), jitted over the whole tree, where optax has one. Each measurement runs in a fresh
child process, so compile caches and memory peaks do not carry over. The table
gives both and their ratio (facade / optax: at most 1 is the goal), and the
facade's peak memory against the goals (1.5 GiB at 2,000 leaves, 3 GiB at 10,000).

Results go to ``benchmarks/results/many_leaves.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# facade class -> (its keyword arguments, the optax alias computing the same rule, that alias's arguments)
OPTIMIZERS = {
    "SGD": (dict(lr=0.01, momentum=0.9), "sgd", dict(learning_rate=0.01, momentum=0.9)),
    "Adam": (dict(lr=1e-3), "adam", dict(learning_rate=1e-3)),
    "AdamW": (dict(lr=1e-3), "adamw", dict(learning_rate=1e-3)),
    "NAdam": (dict(lr=1e-3), "nadam", dict(learning_rate=1e-3)),
    "RAdam": (dict(lr=1e-3), "radam", dict(learning_rate=1e-3)),
    "Adagrad": (dict(lr=1e-2), "adagrad", dict(learning_rate=1e-2)),
    "Adadelta": (dict(lr=1.0), "adadelta", dict(learning_rate=1.0)),
    "Adamax": (dict(lr=2e-3), "adamax", dict(learning_rate=2e-3)),
    "RMSprop": (dict(lr=1e-2), "rmsprop", dict(learning_rate=1e-2)),
    "Rprop": (dict(lr=1e-2), "rprop", dict(learning_rate=1e-2)),
    "ASGD": (dict(lr=1e-2), "sgd", dict(learning_rate=1e-2)),
    "Adafactor": (dict(lr=1e-2), "adafactor", dict(learning_rate=1e-2)),
    "Muon": (dict(lr=1e-3, adjust_lr_fn="original"), "contrib.muon", dict(learning_rate=1e-3)),
    "ADOPT": (dict(lr=1e-3), "contrib.adopt", dict(learning_rate=1e-3)),
    "AdEMAMix": (dict(lr=1e-3), "contrib.ademamix", dict(learning_rate=1e-3)),
    "AdamWScheduleFree": (dict(lr=1e-3), "contrib.schedule_free_adamw", dict(learning_rate=1e-3)),
    "SGDScheduleFree": (dict(lr=1e-2), "contrib.schedule_free_sgd", dict(learning_rate=1e-2)),
    "RAdamScheduleFree": (dict(lr=1e-3), None, {}),
    "Prodigy": (dict(lr=1.0), "contrib.prodigy", dict(learning_rate=1.0)),
    "GaLore": (dict(lr=1e-3), None, {}),
    "Kron": (dict(lr=1e-3), None, {}),
    "SOAP": (dict(lr=1e-3), None, {}),
    "Shampoo": (dict(lr=1e-3), None, {}),
    "MARS": (dict(lr=1e-3), None, {}),
    "SCION": (dict(lr=1e-3), None, {}),
    "AdamMini": (dict(lr=1e-3), None, {}),
    "LaProp": (dict(lr=1e-3), None, {}),
}
# Not timed here: LBFGS and SophiaH evaluate a closure, SparseAdam takes sparse gradients, and
# ZeroRedundancyOptimizer wraps one of the optimizers above.
RSS_GOAL_MIB = {2000: 1536, 10000: 3072}


def _tree(leaves: int, shape: tuple) -> dict:
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    return {f"layer{i:05d}": jnp.asarray(rng.normal(size=shape), jnp.float32) for i in range(leaves)}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, name: str, leaves: int, shape: tuple) -> dict:
    """One measurement in this (fresh) process: build, first step, block; time and peak memory."""
    import jax
    import jax.numpy as jnp

    tree = _tree(leaves, shape)
    grads = jax.tree.map(jnp.ones_like, tree)
    jax.block_until_ready((tree, grads))
    kwargs, alias, alias_kwargs = OPTIMIZERS[name]
    start = time.perf_counter()
    if kind == "gradtx":
        import gradtx.optim as optim

        opt = getattr(optim, name)(tree, **kwargs)
        if hasattr(opt, "train"):  # schedule-free optimizers step in train mode
            opt.train()
        opt.step(grads)
        jax.block_until_ready(opt.params)
    else:
        import optax

        tx = optax
        for part in alias.split("."):
            tx = getattr(tx, part)
        tx = tx(**alias_kwargs)

        @jax.jit
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        state = jax.jit(tx.init)(tree)
        jax.block_until_ready(step(tree, state, grads))
    return {"first_step_s": time.perf_counter() - start, "peak_rss_mib": _peak_rss_mib()}


def measure(kind: str, name: str, leaves: int, shape: tuple, timeout: float) -> dict:
    command = [sys.executable, "-m", "benchmarks.many_leaves", "--child", kind, name, str(leaves),
               "--shape", *map(str, shape)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:80]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cell(result: dict, key: str, fmt: str) -> str:
    return format(result[key], fmt) if key in result else result.get("error", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--shape", type=int, nargs="+", default=[8])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one measurement may take")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "NAME", "LEAVES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(args.shape)
    if args.child:
        kind, name, leaves = args.child
        print(json.dumps(child(kind, name, int(leaves), shape)))
        return
    rows, results = [], []
    header = ("| optimizer | leaves | facade first step (s) | optax first step (s) | facade / optax | "
              "facade peak RSS (MiB) | optax peak RSS (MiB) | RSS goal (MiB) |")
    print(header)
    print("|" + "---|" * 8)
    for leaves in args.leaves:
        for name in args.optimizers:
            ours = measure("gradtx", name, leaves, shape, args.timeout)
            theirs = (measure("optax", name, leaves, shape, args.timeout) if OPTIMIZERS[name][1] is not None
                      else {"error": "no optax rule"})
            ratio = (f"{ours['first_step_s'] / theirs['first_step_s']:.2f}"
                     if "first_step_s" in ours and "first_step_s" in theirs else "-")
            row = (f"| {name} | {leaves} | {_cell(ours, 'first_step_s', '.2f')} | {_cell(theirs, 'first_step_s', '.2f')}"
                   f" | {ratio} | {_cell(ours, 'peak_rss_mib', '.0f')} | {_cell(theirs, 'peak_rss_mib', '.0f')} | "
                   f"{RSS_GOAL_MIB.get(leaves, '-')} |")
            print(row, flush=True)
            rows.append(row)
            results.append({"optimizer": name, "leaves": leaves, "shape": shape, "gradtx": ours, "optax": theirs})
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "many_leaves.md").write_text("\n".join([header, "|" + "---|" * 8, *rows]) + "\n")
    (out / "many_leaves.json").write_text(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
