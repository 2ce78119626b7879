"""The memory ZeRO-1 saves: Adam's state per device, plain vs sharded along a data-parallel mesh axis.

Run from the repository root::

    python -m benchmarks.zero_memory                  # 2, 4 and 8 devices (simulated on CPU)
    python -m benchmarks.zero_memory --devices 8

What it measures, for Adam over an MLP of about 4M float32 parameters
(784-1024-1024-1024-1024-10) replicated over a 1-D ``("data",)`` mesh of N
devices (data parallelism):

* the optimizer state held by one device (the bytes of the shards of every state
  array that live on device 0) after one step, for the plain facade
  ``gradtx.optim.Adam``, for ``gradtx.optim.ZeroRedundancyOptimizer(..., Adam)``
  and for the functional ``gradtx.zero_redundancy(gradtx.adam(...))``, and the
  ratio ZeRO / plain (ZeRO stage 1 expects 1/N: Rajbhandari et al., 2020,
  https://arxiv.org/abs/1910.02054; arrays with no dimension divisible by N,
  such as the step counts and the 10-element bias, stay replicated);
* XLA's memory accounting of one compiled, donated functional step per device
  (arguments + outputs - aliased + temporaries, as ``benchmarks.step_time``
  reports it): what the step needs at its peak, the parameters, the gradients
  and the gathers included. Plain; with ``zero_redundancy`` (whose updates are
  constrained replicated, so that XLA gathers them: a parameter-sized
  temporary); and with ``zero_redundancy(..., replicate_updates=False)`` in a
  step compiled with ``out_shardings`` that keep the parameters replicated (XLA
  then adds each device's slice of the update to its slice of the parameters
  and gathers the new parameters into their donated buffer).

It also checks that the ZeRO step gives the plain step's parameters bit for bit.
Without accelerators, JAX is given 8 host devices
(``--xla_force_host_platform_device_count=8``): this module re-runs itself in a
child process with that flag when it is missing, since the flag must be set
before JAX starts. The table is printed and written to
``benchmarks/results/zero_memory.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

DEVICE_FLAG = "--xla_force_host_platform_device_count"
WIDTHS = (784, 1024, 1024, 1024, 1024, 10)
RESULTS = Path(__file__).resolve().parent / "results" / "zero_memory.md"


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def model(widths: tuple[int, ...] = WIDTHS) -> dict[str, Any]:
    """An MLP's parameters (float32, deterministic), ``{"layer<i>": {"w": (in, out), "b": (out,)}}``."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0), len(widths) - 1)
    return {f"layer{i}": {"w": jax.random.normal(k, (n_in, n_out), jnp.float32) / n_in**0.5,
                          "b": jnp.zeros((n_out,), jnp.float32)}
            for i, (k, n_in, n_out) in enumerate(zip(keys, widths[:-1], widths[1:]))}


def bytes_on(tree: Any, device: Any) -> int:
    """The bytes that ``device`` holds of the arrays of ``tree``: the sum of its addressable shards."""
    import jax

    return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)
               for shard in leaf.addressable_shards if shard.device == device)


def step_bytes(tx: Any, params: Any, grads: Any, keep_shardings: bool = False) -> int:
    """XLA's per-device accounting of one donated ``update + apply_updates``: args + outputs - aliased + temps.

    ``keep_shardings`` compiles the step with ``out_shardings`` equal to the
    inputs' shardings (the new parameters as the old ones, the state as it was).
    """
    import jax

    import gradtx

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    state = jax.jit(tx.init)(params)
    options = {"out_shardings": jax.tree.map(lambda x: x.sharding, (params, state))} if keep_shardings else {}
    compiled = jax.jit(step, donate_argnums=(0, 1), **options).lower(params, state, grads).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        return -1
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
               + analysis.temp_size_in_bytes)


def measure(n_devices: int, lr: float = 1e-3) -> dict[str, Any]:
    """One row: the state per device of the three optimizers and the compiled steps' accounting, on N devices."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import gradtx
    from gradtx import optim

    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("data",))
    device = mesh.devices.flat[0]
    replicated = NamedSharding(mesh, P())

    def placed(tree):  # a fresh replicated copy (the facade donates its parameters' buffers)
        return jax.tree.map(lambda x: jax.device_put(np.asarray(x), replicated), tree)

    host = jax.device_get(model())
    grads = jax.tree.map(lambda x: 1e-2 * np.cos(np.arange(x.size, dtype=np.float32)).reshape(x.shape), host)

    plain = optim.Adam(placed(host), lr=lr)
    zero = optim.ZeroRedundancyOptimizer(placed(host), optim.Adam, mesh=mesh, axis="data", lr=lr)
    for opt in (plain, zero):
        opt.step(placed(grads))
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(zero.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    functional = gradtx.zero_redundancy(gradtx.adam(lr), mesh, "data")
    functional_state = functional.init(placed(host))
    row = {
        "devices": n_devices,
        "parameters": sum(x.size for x in jax.tree.leaves(host)),
        "params_bytes": bytes_on(plain.params, device),
        "plain_state": bytes_on([dict(s) for s in plain.state.values()], device),
        "zero_state": bytes_on([dict(s) for s in zero.state.values()], device),
        "functional_zero_state": bytes_on(functional_state, device),
        "plain_step": step_bytes(gradtx.adam(lr), placed(host), placed(grads)),
        "zero_step": step_bytes(functional, placed(host), placed(grads)),
        "zero_step_kept": step_bytes(gradtx.zero_redundancy(gradtx.adam(lr), mesh, "data", replicate_updates=False),
                                     placed(host), placed(grads), keep_shardings=True),
    }
    row["ratio"] = row["zero_state"] / row["plain_state"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`measure`'s rows."""
    lines = [
        ("| devices | parameters (replicated) | Adam state per device: `optim.Adam` | "
         "`optim.ZeroRedundancyOptimizer` | `gradtx.zero_redundancy` | ZeRO / plain | "
         "compiled step per device: plain | `zero_redundancy` | "
         "`zero_redundancy(replicate_updates=False)` + `out_shardings` |"),
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        step = [_mib(r[k]) if r[k] >= 0 else "n/a" for k in ("plain_step", "zero_step", "zero_step_kept")]
        lines.append(
            f"| {r['devices']} | {r['parameters'] / 1e6:.2f}M = {_mib(r['params_bytes'])} | {_mib(r['plain_state'])} | "
            f"{_mib(r['zero_state'])} | {_mib(r['functional_zero_state'])} | {r['ratio']:.4f} "
            f"(1/{r['devices']} = {1 / r['devices']:.4f}) | {step[0]} | {step[1]} | {step[2]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measures each mesh size of ``--devices``, prints the table and writes it to ``benchmarks/results``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[2, 4, 8],
                        help="mesh sizes to measure (default: 2 4 8)")
    args = parser.parse_args(argv)
    if DEVICE_FLAG not in os.environ.get("XLA_FLAGS", ""):  # JAX reads the flag at start-up: re-run with it
        flags = f"{os.environ.get('XLA_FLAGS', '')} {DEVICE_FLAG}={max(8, *args.devices)}".strip()
        command = [sys.executable, "-m", "benchmarks.zero_memory", *(argv if argv is not None else sys.argv[1:])]
        sys.exit(subprocess.call(command, env={**os.environ, "XLA_FLAGS": flags}))

    import jax

    available = len(jax.devices())
    rows = [measure(n) for n in args.devices if n <= available]
    skipped = [n for n in args.devices if n > available]
    text = table(rows)
    header = (f"Adam (float32) over an MLP {'-'.join(map(str, WIDTHS))} replicated over a 1-D data mesh; "
              f"jax {jax.__version__}, {jax.default_backend()} backend with {available} devices, "
              f"{platform.machine()}. Command: `python -m benchmarks.zero_memory"
              f"{' --devices ' + ' '.join(map(str, args.devices)) if argv or sys.argv[1:] else ''}`.")
    if skipped:
        header += f" Not measured (only {available} devices): {skipped}."
    print(header + "\n\n" + text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(header + "\n\n" + text + "\n")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
