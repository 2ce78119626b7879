"""One training step (forward, backward, AdamW), side by side, on models a user would train on a CPU.

Run from the repository root::

    python -m benchmarks.train_step                  # the full table (about 10 minutes on 2 quiet cores)
    python -m benchmarks.train_step --quick          # smaller models and batches, few repeats: a smoke run
    python -m benchmarks.train_step --models "MLP 8x128" --repeats 50

Models (float32, AdamW lr 1e-3, weight decay 0.01):

* MLPs, depth x width 2x256, 8x128 and 4x1024: 64 inputs, ReLU, 10 classes, batch 128
  of random data, cross-entropy;
* a small CNN on scikit-learn's digits (8x8 images; conv 3x3 16, conv 3x3 32, dense 10),
  batch 128;
* a decoder-only transformer language model, 4 layers, width 256, 4 heads, sequence 128,
  byte vocabulary, batch 8, on the text of scikit-learn's dataset descriptions
  (``sklearn/datasets/descr/*.rst``, shipped with the package).

Implementations (columns): torch eager with ``AdamW(fused=True)``; ``torch.compile`` of the whole
step (forward, backward, ``opt.step``), reported as failed where it does not compile here; the
gradtx facade's two-call loop (``loss, g = jitted value_and_grad(...); opt.step(g)``); the gradtx
compiled step (``opt.compile_step(loss_fn)``); a hand-written ``jax.jit`` of gradient +
``gradtx.adamw`` update with donated buffers; flax nnx (``nnx.jit`` + ``nnx.Optimizer`` with
``optax.adamw``) where flax is installed. Every implementation starts from the same weights.

Timing: the medians of interleaved rounds after warm-up (``interleaved_medians`` of
benchmarks/step_time.py: one step of each per round, after a pause); torch runs in a child process
that takes turns with this one, as step_time does. The first step of each (its compilation) is
reported separately. Results go to ``benchmarks/results/train_step.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.step_time import PAUSE_S, PRIME_ELEMENTS, RESULTS, interleaved_medians

LR, WEIGHT_DECAY = 1e-3, 0.01
TORCH_IMPLS = ("torch eager (fused AdamW)", "torch.compile (whole step)")
JAX_IMPLS = ("gradtx facade two-call", "gradtx compiled step", "hand-written jax.jit", "flax nnx + optax")
COLUMNS = TORCH_IMPLS + JAX_IMPLS


# --- models: weights in NumPy, the same forward in JAX and in torch -----------------------------------------


def model_specs(quick: bool) -> dict[str, dict]:
    """Each model's kind and sizes (smaller in quick mode)."""
    if quick:
        return {"MLP 2x256": {"kind": "mlp", "depth": 2, "width": 64, "batch": 32},
                "CNN digits": {"kind": "cnn", "batch": 32},
                "Transformer LM": {"kind": "lm", "layers": 1, "width": 64, "heads": 2, "seq": 32, "batch": 2}}
    return {"MLP 2x256": {"kind": "mlp", "depth": 2, "width": 256, "batch": 128},
            "MLP 8x128": {"kind": "mlp", "depth": 8, "width": 128, "batch": 128},
            "MLP 4x1024": {"kind": "mlp", "depth": 4, "width": 1024, "batch": 128},
            "CNN digits": {"kind": "cnn", "batch": 128},
            "Transformer LM": {"kind": "lm", "layers": 4, "width": 256, "heads": 4, "seq": 128, "batch": 8}}


def _dense(rng: np.random.Generator, n_in: int, n_out: int) -> dict:
    return {"w": (rng.normal(size=(n_in, n_out)) / math.sqrt(n_in)).astype(np.float32),
            "b": np.zeros(n_out, np.float32)}


def init_weights(spec: dict, seed: int = 0) -> dict:
    """The model's weights as a nested dict of float32 NumPy arrays."""
    rng = np.random.default_rng(seed)
    if spec["kind"] == "mlp":
        sizes = [64] + [spec["width"]] * spec["depth"] + [10]
        return {f"layer{i}": _dense(rng, a, b) for i, (a, b) in enumerate(itertools.pairwise(sizes))}
    if spec["kind"] == "cnn":
        conv = lambda c_in, c_out: {"w": (rng.normal(size=(3, 3, c_in, c_out)) / math.sqrt(9 * c_in)).astype(
            np.float32), "b": np.zeros(c_out, np.float32)}
        return {"conv1": conv(1, 16), "conv2": conv(16, 32), "head": _dense(rng, 8 * 8 * 32, 10)}
    d = spec["width"]
    norm = lambda: {"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32)}
    weights = {"embed": (rng.normal(size=(256, d)) * 0.02).astype(np.float32),
               "pos": (rng.normal(size=(spec["seq"], d)) * 0.02).astype(np.float32),
               "norm": norm(), "head": _dense(rng, d, 256)}
    for i in range(spec["layers"]):
        weights[f"block{i}"] = {"norm1": norm(), "qkv": _dense(rng, d, 3 * d), "proj": _dense(rng, d, d),
                                "norm2": norm(), "up": _dense(rng, d, 4 * d), "down": _dense(rng, 4 * d, d)}
    return weights


def make_batch(spec: dict, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One batch ``(x, y)``: random MLP data, digits images, or byte sequences of the shipped text."""
    rng = np.random.default_rng(seed)
    n = spec["batch"]
    if spec["kind"] == "mlp":
        return rng.normal(size=(n, 64)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)
    if spec["kind"] == "cnn":
        from sklearn.datasets import load_digits

        digits = load_digits()
        pick = rng.integers(0, len(digits.target), n)
        return (digits.images[pick, :, :, None] / 16.0).astype(np.float32), digits.target[pick].astype(np.int32)
    data = np.frombuffer(shipped_text().encode("utf-8", "replace"), np.uint8).astype(np.int32)
    starts = rng.integers(0, len(data) - spec["seq"] - 1, n)
    tokens = np.stack([data[s:s + spec["seq"] + 1] for s in starts])
    return tokens[:, :-1], tokens[:, 1:]


def shipped_text() -> str:
    """scikit-learn's dataset descriptions (reStructuredText shipped inside the installed package)."""
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.rst")))


def jax_loss_fn(spec: dict) -> Callable:
    """``loss_fn(params, x, y)`` in JAX: mean cross-entropy of the model's logits."""
    import jax
    import jax.numpy as jnp

    def cross_entropy(logits, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], axis=-1))

    def dense(p, x):
        return x @ p["w"] + p["b"]

    def layer_norm(p, x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]

    def mlp(params, x, y):
        n = len(params)
        for i in range(n):
            x = dense(params[f"layer{i}"], x)
            x = jax.nn.relu(x) if i < n - 1 else x
        return cross_entropy(x, y)

    def cnn(params, x, y):
        for name in ("conv1", "conv2"):
            x = jax.lax.conv_general_dilated(x, params[name]["w"], (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x + params[name]["b"])
        return cross_entropy(dense(params["head"], x.reshape(x.shape[0], -1)), y)

    def lm(params, tokens, y):
        heads, seq = spec["heads"], tokens.shape[1]
        x = params["embed"][tokens] + params["pos"][:seq]
        mask = jnp.tril(jnp.ones((seq, seq), bool))
        for i in range(spec["layers"]):
            p = params[f"block{i}"]
            q, k, v = jnp.split(dense(p["qkv"], layer_norm(p["norm1"], x)), 3, axis=-1)
            split = lambda t: t.reshape(t.shape[0], seq, heads, -1).transpose(0, 2, 1, 3)
            q, k, v = split(q), split(k), split(v)
            scores = jnp.where(mask, q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]), -1e9)
            attended = (jax.nn.softmax(scores, -1) @ v).transpose(0, 2, 1, 3).reshape(x.shape)
            x = x + dense(p["proj"], attended)
            x = x + dense(p["down"], jax.nn.gelu(dense(p["up"], layer_norm(p["norm2"], x)), approximate=False))
        return cross_entropy(dense(params["head"], layer_norm(params["norm"], x)), y)

    return {"mlp": mlp, "cnn": cnn, "lm": lm}[spec["kind"]]


def torch_loss_fn(spec: dict) -> Callable:
    """The same loss in torch, over a dict of tensors."""
    import torch
    import torch.nn.functional as F

    def dense(p, x):
        return x @ p["w"] + p["b"]

    def mlp(params, x, y):
        n = len(params)
        for i in range(n):
            x = dense(params[f"layer{i}"], x)
            x = torch.relu(x) if i < n - 1 else x
        return F.cross_entropy(x, y)

    def cnn(params, x, y):
        x = x.permute(0, 3, 1, 2)
        for name in ("conv1", "conv2"):
            x = torch.relu(F.conv2d(x, params[name]["w"].permute(3, 2, 0, 1), params[name]["b"], padding=1))
        return F.cross_entropy(dense(params["head"], x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)), y)

    def lm(params, tokens, y):
        heads, seq = spec["heads"], tokens.shape[1]
        x = F.embedding(tokens, params["embed"]) + params["pos"][:seq]
        mask = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
        norm = lambda p, x: F.layer_norm(x, x.shape[-1:], p["scale"], p["bias"], 1e-5)
        for i in range(spec["layers"]):
            p = params[f"block{i}"]
            q, k, v = dense(p["qkv"], norm(p["norm1"], x)).chunk(3, dim=-1)
            split = lambda t: t.reshape(t.shape[0], seq, heads, -1).transpose(1, 2)
            q, k, v = split(q), split(k), split(v)
            scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask, -1e9)
            x = x + dense(p["proj"], (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape))
            x = x + dense(p["down"], F.gelu(dense(p["up"], norm(p["norm2"], x))))
        logits = dense(params["head"], norm(params["norm"], x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    return {"mlp": mlp, "cnn": cnn, "lm": lm}[spec["kind"]]


# --- the implementations: each returns a function running one step (blocking until done) --------------------


def jax_step(impl: str, spec: dict) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    import gradtx
    from gradtx.optim import AdamW

    loss_fn = jax_loss_fn(spec)
    x, y = (jnp.asarray(a) for a in make_batch(spec))
    weights = jax.tree.map(jnp.asarray, init_weights(spec))
    if impl == "gradtx facade two-call":
        opt = AdamW(weights, lr=LR, weight_decay=WEIGHT_DECAY)
        grad_fn = jax.jit(jax.value_and_grad(loss_fn))

        def step():
            loss, grads = grad_fn(opt.params, x, y)
            opt.step(grads)
            return jax.block_until_ready(loss)

        return step
    if impl == "gradtx compiled step":
        step_fn = AdamW(weights, lr=LR, weight_decay=WEIGHT_DECAY).compile_step(loss_fn)
        return lambda: jax.block_until_ready(step_fn(x, y))
    if impl == "hand-written jax.jit":
        tx = gradtx.adamw(LR, weight_decay=WEIGHT_DECAY)
        box = [weights, tx.init(weights)]

        def update(params, state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, state = tx.update(grads, state, params)
            return gradtx.apply_updates(params, updates), state, loss

        update = jax.jit(update, donate_argnums=(0, 1))

        def step():
            box[0], box[1], loss = update(box[0], box[1], x, y)
            return jax.block_until_ready(loss)

        return step
    if impl == "flax nnx + optax":
        import optax
        from flax import nnx

        class Model(nnx.Module):
            def __init__(self, weights):
                self.weights = nnx.data(jax.tree.map(nnx.Param, weights))

            def __call__(self, x, y):
                return loss_fn(jax.tree.map(lambda p: p[...], self.weights, is_leaf=lambda v: isinstance(v, nnx.Param)),
                               x, y)

        model = Model(weights)
        optimizer = nnx.Optimizer(model, optax.adamw(LR, weight_decay=WEIGHT_DECAY), wrt=nnx.Param)

        @nnx.jit
        def train(model, optimizer, x, y):
            loss, grads = nnx.value_and_grad(lambda m: m(x, y))(model)
            optimizer.update(model, grads)
            return loss

        return lambda: jax.block_until_ready(train(model, optimizer, x, y))
    raise ValueError(impl)


def torch_step(impl: str, spec: dict) -> Callable[[], Any]:
    import torch

    loss_fn = torch_loss_fn(spec)
    x, y = make_batch(spec)
    x = torch.from_numpy(x) if x.dtype == np.float32 else torch.from_numpy(x).long()
    y = torch.from_numpy(y).long()
    import jax

    flat, treedef = jax.tree.flatten(init_weights(spec))
    params = [torch.tensor(a, requires_grad=True) for a in flat]
    tree = jax.tree.unflatten(treedef, params)
    compiled = impl == "torch.compile (whole step)"
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, **({} if compiled else {"fused": True}))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(tree, x, y)
        loss.backward()
        opt.step()
        return loss.detach()

    return torch.compile(step) if compiled else step


class TorchWorker:
    """torch's steps in a child process, taking turns with this one (XLA's and torch's thread pools apart)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_torch_worker, args=(child,), daemon=True)
        self.process.start()

    def ask(self, *message: Any) -> Any:
        self.conn.send(message)
        return self.conn.recv()

    def round(self) -> dict[str, float]:
        return self.ask("round")

    def close(self) -> None:
        self.conn.send(("stop",))
        self.process.join(timeout=60)


def _torch_worker(conn: Any) -> None:
    import torch

    fns: dict[str, Callable[[], Any]] = {}
    prime = torch.zeros(PRIME_ELEMENTS)  # wakes torch's thread pool before each timed step, as step_time does
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        if message[0] == "build":
            _, spec, impls = message
            fns.clear()
            first, errors = {}, {}
            for impl in impls:
                try:
                    start = time.perf_counter()
                    fn = torch_step(impl, spec)
                    fn()
                    first[impl] = time.perf_counter() - start
                    fns[impl] = fn
                except Exception as error:  # noqa: BLE001 - e.g. torch.compile without a working compiler: a row
                    errors[impl] = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
            conn.send((first, errors))
        elif message[0] == "round":
            times = {}
            for name, fn in fns.items():
                time.sleep(PAUSE_S)
                prime.add_(1.0)
                start = time.perf_counter()
                fn()
                times[name] = (time.perf_counter() - start) * 1e3
            conn.send(times)


def flax_available() -> bool:
    try:
        import flax.nnx  # noqa: F401
    except ImportError:
        return False
    return True


def run(models: list[str], quick: bool, warmup: int, repeats: int) -> dict:
    import jax

    specs = model_specs(quick)
    worker = TorchWorker()
    result: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, "
                                         f"{multiprocessing.cpu_count()} cores, jax {jax.__version__}",
                              "quick": quick, "warmup": warmup, "repeats": repeats, "models": {}}
    try:
        for name in models:
            spec = specs[name]
            first, errors = worker.ask("build", spec, list(TORCH_IMPLS))
            fns = {}
            for impl in JAX_IMPLS:
                if impl == "flax nnx + optax" and not flax_available():
                    errors[impl] = "flax is not installed"
                    continue
                start = time.perf_counter()
                fn = jax_step(impl, spec)
                fn()
                first[impl] = time.perf_counter() - start
                fns[impl] = fn
            ms = interleaved_medians(fns, warmup=warmup, repeats=repeats, remote=worker)
            result["models"][name] = {"spec": spec, "median_ms": ms, "first_step_s": first, "errors": errors}
            print(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items()), flush=True)
    finally:
        worker.close()
    return result


def to_markdown(result: dict) -> str:
    """The table: median ms per step (first step in seconds below), and the two ratios the goals name."""
    head = "| model | " + " | ".join(COLUMNS) + " | compiled / hand-written | torch eager / compiled |"
    lines = [(f"Median milliseconds per training step ({result['machine']}; {result['repeats']} timed rounds "
             f"after {result['warmup']}{', quick sizes' if result['quick'] else ''})."), "", head,
             "|" + "---|" * (len(COLUMNS) + 3)]
    for name, entry in result["models"].items():
        ms, errors = entry["median_ms"], entry["errors"]
        cells = [f"{ms[c]:.2f}" if c in ms else ("failed" if c in errors and "installed" not in errors[c] else "n/a")
                 for c in COLUMNS]
        ours, hand, eager = (ms.get(k) for k in ("gradtx compiled step", "hand-written jax.jit", COLUMNS[0]))
        ratio = f"{ours / hand:.2f}x" if ours and hand else "n/a"
        speedup = f"{eager / ours:.2f}x" if ours and eager else "n/a"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} | {speedup} |")
    lines += ["", "First step (compilation included), seconds:", "", "| model | " + " | ".join(COLUMNS) + " |",
              "|" + "---|" * (len(COLUMNS) + 1)]
    for name, entry in result["models"].items():
        first = entry["first_step_s"]
        lines.append(f"| {name} | " + " | ".join(f"{first[c]:.2f}" if c in first else "n/a" for c in COLUMNS) + " |")
    notes = [f"- {name}, {impl}: {error}" for name, entry in result["models"].items()
             for impl, error in entry["errors"].items()]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["models"])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(COLUMNS)
    for i, column in enumerate(COLUMNS):
        values = [result["models"][n]["median_ms"].get(column, np.nan) for n in names]
        ax.bar(np.arange(len(names)) + i * width, values, width, label=column)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_yscale("log")
    ax.set_ylabel("ms per training step (median, log scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models and batches (a smoke run)")
    parser.add_argument("--models", nargs="*", help="model names (default: all)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds after the first step")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for train_step.{md,json,png}")
    args = parser.parse_args()
    models = args.models or list(model_specs(args.quick))
    result = run(models, args.quick, args.warmup, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    table = to_markdown(result)
    (args.out / "train_step.md").write_text(table)
    (args.out / "train_step.json").write_text(json.dumps(result, indent=1))
    try:
        plot(result, args.out / "train_step.png")
    except ImportError:
        print("matplotlib is not installed: no plot")
    print(table)


if __name__ == "__main__":
    main()
