"""The facade's step over parameters sharded across devices, against gradtx's functional step under a user's jit.

Run from the repository root (on a CPU, ``--devices`` simulated devices)::

    python -m benchmarks.sharded_step                     # AdamW, 200 and 500 parameters of (32, 32) and (256, 256)
    python -m benchmarks.sharded_step --count 500 --shape 32 32 --devices 2

Each parameter is sharded by rows over a mesh of all devices. The facade runs
``opt.step(grads)`` in the default tier (its state kept per parameter as the
chain's own state, laid out as the parameters are); the peer is the same rule,
``gradtx.adamw`` with torch's AdamW defaults, in one ``jax.jit`` with the
parameters and state donated, as a training step over a pytree would run it.
Both take the same gradients. The table gives the median milliseconds of each
and their ratio (facade / functional). Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import os
import time


def _measure(count: int, shape: tuple[int, ...], repeats: int, program_max_params: int | None) -> tuple[float, float]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import gradtx
    from gradtx import optim

    mesh = jax.make_mesh((len(jax.devices()),), ("x",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    params = {f"p{i}": jax.device_put(jnp.full(shape, 0.1 + i * 1e-3, jnp.float32), rows) for i in range(count)}
    grads = {k: jax.device_put(jnp.full(shape, 0.01, jnp.float32), rows) for k in params}

    opt = optim.AdamW(dict(params), lr=1e-3)
    if program_max_params != 0:
        opt.program_max_params = program_max_params
    tx = gradtx.adamw(1e-3, weight_decay=1e-2)
    state = tx.init(params)

    def functional(p, s, g):
        updates, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, updates), s

    functional = jax.jit(functional, donate_argnums=(0, 1))
    p = jax.tree.map(lambda x: jnp.array(x, copy=True), params)

    def facade_step():
        opt.step(grads)
        return opt.params

    def functional_step():
        nonlocal p, state
        p, state = functional(p, state, grads)
        return p

    times = {}
    for name, step in (("facade", facade_step), ("functional", functional_step)):
        for _ in range(3):
            jax.block_until_ready(step())
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(step())
            samples.append(time.perf_counter() - start)
        times[name] = 1e3 * float(np.median(samples))
    return times["facade"], times["functional"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, nargs="+", default=[200, 500], help="numbers of parameters")
    parser.add_argument("--shape", type=int, nargs="+", default=None, help="one shape (default: (32, 32), (256, 256))")
    parser.add_argument("--devices", type=int, default=2, help="simulated CPU devices (default 2)")
    parser.add_argument("--repeats", type=int, default=40, help="timed steps per measurement (default 40)")
    parser.add_argument("--program-max-params", type=int, default=0,
                        help="the facade's opt.program_max_params (default: the class's; -1: None, one program)")
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}").strip()
    shapes = [tuple(args.shape)] if args.shape else [(32, 32), (256, 256)]
    print("| parameters | shape | facade ms | functional ms | facade / functional |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        for count in args.count:
            limit = None if args.program_max_params < 0 else args.program_max_params
            facade, functional = _measure(count, shape, args.repeats, limit)
            print(f"| {count} | {shape} | {facade:.2f} | {functional:.2f} | {facade / functional:.2f} |", flush=True)


if __name__ == "__main__":
    main()
