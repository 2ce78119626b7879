"""Random sequences of what users do between steps, in lockstep with torch.

Each record of tests/cases/optimizers.py whose reference is a torch.optim class
runs seeded random sequences of actions on a gradtx optimizer and on torch's
over the same named parameters: steps where some parameters have no gradient,
lr and tier edits, state entries and step counts written, state deleted,
``p.data`` assigned, ``add_param_group``, ``zero_grad``, ``state_dict`` loaded
into fresh optimizers and into the same one, whole state dicts replaced, and
the compiled training step. Parameters and every state entry are compared with
torch after each step and at the end (float64, the parity tolerance).

The packing threshold and the program size are drawn per sequence, so small
parameters are packed, stored or both, and groups run as several programs. A
second placement puts the parameters on two (simulated) devices, one of them
sharded, with a second optimizer stepping some of the same parameters. Records
compared on complex parameters get two complex ones among the others.

torch's for-loop kernels are the reference (its foreach kernels round some
scalars differently, ASGD's ``eta``); every gradtx tier gives the same numbers.
After a load, torch casts every entry but the step to its parameter's dtype;
gradtx keeps the dtypes it keeps (docs/facade.md, "State, state_dict and
resuming"), so the torch side's entries are cast back to their dtypes before
the load.
"""

from __future__ import annotations

import copy
import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gradtx import optim
from tests.cases.optimizers import OPTIMIZERS
from tests.harness import TOLERANCES

RECORDS = [info for info in OPTIMIZERS if info.module == "torch.optim" and info.gradients == "dense"
           and not info.closure and not info.needs_mesh]
SHAPES = {
    "any": {"a": (3,), "b": (3,), "c": (3,), "d": (2, 3), "e": (), "f": (10, 8), "g": (7,), "h": (3, 3),
            "i": (3,), "j": (12, 9)},
    # three shapes: each compiles its own orthogonalization
    "matrices": {"a": (3, 3), "b": (3, 3), "c": (2, 3), "d": (3, 3), "f": (10, 8), "h": (2, 3), "j": (10, 8)},
}
COMPLEX = {"y": (2, 5), "z": (4,)}  # complex parameters, for the records compared on complex ones
TIER_KEYS = ("foreach", "fused", "capturable", "differentiable")
ACTIONS = 16
# sequences per record and placement; GRADTX_SEQUENCES=50 runs more (each its own seed)
SEQUENCES = int(os.environ.get("GRADTX_SEQUENCES", "1"))


def _close(ours, theirs, what: str) -> None:
    a, b = np.asarray(ours), np.asarray(theirs)
    a, b = (a.astype(np.complex128), b.astype(np.complex128)) if np.iscomplexobj(a) or np.iscomplexobj(b) else (
        a.astype(np.float64), b.astype(np.float64))
    assert a.shape == b.shape, f"{what}: shape {a.shape}, torch's {b.shape}"
    np.testing.assert_allclose(a, b, **TOLERANCES["float64"], equal_nan=True, err_msg=what)


class Sequence:
    """One gradtx optimizer and torch's over the same named parameters, driven by one seeded generator."""

    skip = 0.15  # the chance that a parameter has no gradient at a step

    def __init__(self, info, seed: int, placement: str) -> None:
        self.rng = rng = np.random.default_rng(seed)
        self.info, self.placement = info, placement
        case = info.cases[seed % len(info.cases)]
        self.defaults = {k: v for k, v in case.kwargs.items() if k not in TIER_KEYS}
        self.shapes = dict(SHAPES[info.params])
        if info.complex_options is not None and info.params == "any":
            self.shapes.update(COMPLEX)
        names = list(self.shapes)
        rng.shuffle(names)
        self.held = names[:int(rng.integers(0, 3))]  # added later with add_param_group
        rest = names[len(self.held):]
        cuts = sorted(rng.choice(range(1, len(rest)), size=int(rng.integers(0, 3)), replace=False).tolist())
        self.specs = [{"params": rest[i:j], **self._options()} for i, j in zip([0] + cuts, cuts + [len(rest)])]
        self.placements = {k: self._sharding(k) for k in self.shapes}
        self.tensors = {k: torch.tensor(self._draw(k), requires_grad=True) for k in self.shapes}
        self.boxes = {k: optim.Parameter(self._placed(k, t.detach().numpy().copy()), name=k)
                      for k, t in self.tensors.items()}
        self.shared = [k for k in self.shapes if placement == "two devices" and rng.random() < 0.4]
        self.pack_max_numel = int(rng.choice([16, 64, 8192]))
        self.program_max_params = int(rng.choice([2, 32]))
        self.log: list[str] = []
        self.step_fn = None
        self._make()

    # --- set-up ---------------------------------------------------------------------------------------------

    def _sharding(self, name: str):
        if self.placement == "one device":
            return None
        devices, r = jax.devices(), self.rng.random()
        if r < 0.3 and self.shapes[name] and self.shapes[name][0] % 2 == 0:
            mesh = jax.sharding.Mesh(np.array(devices[:2]), ("x",))
            return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
        return jax.sharding.SingleDeviceSharding(devices[int(r < 0.6)])

    def _draw(self, name: str) -> np.ndarray:
        value = self.rng.normal(size=self.shapes[name])
        return value + 1j * self.rng.normal(size=self.shapes[name]) if name in COMPLEX else value

    def _placed(self, name: str, value) -> jax.Array:
        array = jnp.asarray(value)
        return array if self.placements[name] is None else jax.device_put(array, self.placements[name])

    def _options(self) -> dict:
        options, r = {}, self.rng.random()
        if r < 0.5 and len(self.info.tiers) > 1:
            options["foreach"] = bool(r < 0.3)
        if self.rng.random() < 0.3:
            options["lr"] = float(self.rng.choice([0.001, 0.02]))
        return options

    def _make(self) -> None:
        def groups(side, tiers):
            return [{**{k: v for k, v in g.items() if k != "params" and (tiers or k not in TIER_KEYS)},
                     "params": [side[n] for n in g["params"]]} for g in self.specs]

        loop = {"foreach": False} if "foreach" in inspect.signature(self.info.reference).parameters else {}
        self.theirs = self.info.reference(groups(self.tensors, False), **self.defaults, **loop)
        self.ours = self.info.cls(groups(self.boxes, True), **self.defaults)
        self.ours.pack_max_numel, self.ours.program_max_params = self.pack_max_numel, self.program_max_params
        if self.shared:
            self.theirs2 = torch.optim.SGD([self.tensors[n] for n in self.shared], lr=0.01, momentum=0.9,
                                           foreach=False)
            self.ours2 = optim.SGD([self.boxes[n] for n in self.shared], lr=0.01, momentum=0.9)

    def _names(self) -> list[str]:
        return [n for g in self.specs for n in g["params"]]

    def _dtypes(self) -> dict:
        return {k: {key: v.dtype for key, v in self.theirs.state[t].items() if isinstance(v, torch.Tensor)}
                for k, t in self.tensors.items() if t in self.theirs.state}

    def _cast_back(self, dtypes: dict) -> None:
        """torch's loaded entries cast back to the dtypes they had before the load (gradtx keeps its dtypes)."""
        for k, entries in dtypes.items():
            state = self.theirs.state.get(self.tensors[k], {})
            for key, dtype in entries.items():
                if isinstance(state.get(key), torch.Tensor):
                    state[key] = state[key].to(dtype)

    # --- checks ---------------------------------------------------------------------------------------------

    def check_params(self, what: str) -> None:
        for k in self.shapes:
            _close(self.boxes[k].data, self.tensors[k].detach().numpy(), f"{what}: parameter {k} ({self.log})")

    def check_state(self, what: str) -> None:
        """Every entry torch keeps, by name; gradtx may hold more (Adagrad creates a later group's state when it
        joins, as documented)."""
        for k, t in self.tensors.items():
            theirs = self.theirs.state.get(t)
            if not theirs:
                continue
            ours = self.ours.state[self.boxes[k]]
            assert set(ours) == set(theirs), f"{what}: {k}'s keys {sorted(ours)}, torch's {sorted(theirs)}"
            for key, value in theirs.items():
                value = value.detach().numpy() if isinstance(value, torch.Tensor) else value
                _close(ours[key], value, f"{what}: state[{k}][{key!r}] ({self.log})")

    # --- actions --------------------------------------------------------------------------------------------

    def step(self) -> None:
        names = self._names()
        give = [n for n in names if self.rng.random() >= self.skip]
        for n in self.shapes:
            g = self._draw(n) if n in give else None
            self.boxes[n].grad = None if g is None else self._placed(n, g)
            # a JAX gradient; gradtx descends along its conjugate, torch's .grad
            self.tensors[n].grad = None if g is None else torch.tensor(np.conj(g))
        self.log.append(f"step without {sorted(set(names) - set(give))}")
        self.ours.step()
        self.theirs.step()
        if self.shared and self.rng.random() < 0.7:
            self.ours2.step()
            self.theirs2.step()
        self.check_params("after a step")

    def compiled_step(self) -> None:
        """``opt.compile_step``: every parameter's gradient is the batch's leaf (the loss is linear)."""
        if self.step_fn is None or self.step_fn[0] is not self.ours or self.step_fn[1] != len(self.specs):
            def loss_fn(params, batch):
                return sum(jnp.real(jnp.vdot(b, p)) for b, p in zip(jax.tree.leaves(batch), jax.tree.leaves(params)))

            self.step_fn = (self.ours, len(self.specs), self.ours.compile_step(loss_fn), loss_fn)
        order = [p.name for g in self.ours.param_groups for p in g["params"]]
        batch = jax.tree.unflatten(jax.tree.structure(self.ours.params), [jnp.asarray(self._draw(n)) for n in order])
        grads = dict(zip(order, jax.tree.leaves(jax.grad(self.step_fn[3])(self.ours.params, batch))))
        for n, t in self.tensors.items():
            t.grad = torch.tensor(np.conj(np.asarray(grads[n]))) if n in grads else None
        self.log.append("compiled step")
        self.step_fn[2](batch)
        self.theirs.step()
        self.check_params("after a compiled step")

    def edit_lr(self) -> None:
        i, lr = int(self.rng.integers(len(self.specs))), float(self.rng.choice([0.001, 0.01, 0.03]))
        self.log.append(f"group {i} lr={lr}")
        self.ours.param_groups[i]["lr"] = self.theirs.param_groups[i]["lr"] = lr

    def switch_tier(self) -> None:
        i, foreach = int(self.rng.integers(len(self.specs))), [None, True, False][int(self.rng.integers(3))]
        if len(self.info.tiers) > 1:
            self.log.append(f"group {i} foreach={foreach}")
            self.ours.param_groups[i]["foreach"] = foreach

    def reload_fresh(self) -> None:
        self.log.append("state_dict into fresh optimizers")
        ours, theirs, dtypes = self.ours.state_dict(), copy.deepcopy(self.theirs.state_dict()), self._dtypes()
        self.specs = [{"params": g["params"]} for g in self.specs]  # the loaded groups bring their options
        self._make()
        self.ours.load_state_dict(ours)
        self.theirs.load_state_dict(theirs)
        self._cast_back(dtypes)

    def reload_same(self) -> None:
        self.log.append("own state_dict loaded")
        ours, theirs, dtypes = self.ours.state_dict(), copy.deepcopy(self.theirs.state_dict()), self._dtypes()
        self.ours.load_state_dict(ours)
        self.theirs.load_state_dict(theirs)
        self._cast_back(dtypes)

    def write_entry(self) -> None:
        """An entry of a parameter's shape (not a 0-d parameter's: its 0-d entries may be shared scalars)."""
        options = [(n, k) for n in self._names() for k, v in self.theirs.state.get(self.tensors[n], {}).items()
                   if isinstance(v, torch.Tensor) and v.ndim and v.shape == self.tensors[n].shape]
        if options:
            n, key = options[int(self.rng.integers(len(options)))]
            value = np.abs(self._draw(n)).astype(self.tensors[n].detach().numpy().dtype)  # >= 0 (for any entry)
            self.log.append(f"state[{n}][{key!r}] = ...")
            self.ours.state[self.boxes[n]][key] = jnp.asarray(value)
            self.theirs.state[self.tensors[n]][key] = torch.tensor(value)

    def write_step(self) -> None:
        options = [n for n in self._names() if isinstance(self.theirs.state.get(self.tensors[n], {}).get("step"),
                                                          torch.Tensor)]
        if options:
            n, count = options[int(self.rng.integers(len(options)))], float(self.rng.integers(1, 9))
            self.log.append(f"state[{n}]['step'] = {count}")
            self.theirs.state[self.tensors[n]]["step"] = torch.tensor(count)
            self.ours.state[self.boxes[n]]["step"] = jnp.asarray(count, jnp.float32)

    def replace_entry(self) -> None:
        """``opt.state[p] = {...}``: a whole new dict, its arrays of the parameter's shape scaled."""
        options = [n for n in self._names() if self.tensors[n] in self.theirs.state]
        if options:
            n = options[int(self.rng.integers(len(options)))]
            new = {k: v.clone() * 1.5 if isinstance(v, torch.Tensor) and v.ndim and k != "step"
                   else v.clone() if isinstance(v, torch.Tensor) else v
                   for k, v in self.theirs.state[self.tensors[n]].items()}
            self.log.append(f"state[{n}] = a new dict")
            self.theirs.state[self.tensors[n]] = new
            self.ours.state[self.boxes[n]] = {k: jnp.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v
                                              for k, v in new.items()}

    def delete_state(self) -> None:
        n = self._names()[int(self.rng.integers(len(self._names())))]
        if self.tensors[n] in self.theirs.state:
            self.log.append(f"del state[{n}]")
            del self.theirs.state[self.tensors[n]]
            del self.ours.state[self.boxes[n]]

    def assign_data(self) -> None:
        n = self._names()[int(self.rng.integers(len(self._names())))]
        value = self._draw(n)
        self.log.append(f"{n}.data = ...")
        self.boxes[n].data = self._placed(n, value)
        with torch.no_grad():
            self.tensors[n].copy_(torch.tensor(value))

    def add_group(self) -> None:
        if self.held:
            n, options = self.held.pop(), self._options()
            self.log.append(f"add_param_group([{n}], {options})")
            self.specs.append({"params": [n], **options})
            self.ours.add_param_group({"params": [self.boxes[n]], **options})
            self.theirs.add_param_group({"params": [self.tensors[n]],
                                         **{k: v for k, v in options.items() if k not in TIER_KEYS}})

    def zero_grad(self) -> None:
        to_none = bool(self.rng.random() < 0.5)
        self.log.append(f"zero_grad(set_to_none={to_none})")
        self.ours.zero_grad(set_to_none=to_none)
        self.theirs.zero_grad(set_to_none=to_none)

    def read_state(self) -> None:
        self.log.append("state compared")
        self.check_state("state")

    def run(self, actions: int) -> None:
        table = [(0.42, self.step), (0.48, self.compiled_step if self.placement == "one device" else self.step),
                 (0.54, self.edit_lr), (0.61, self.switch_tier), (0.66, self.reload_fresh),
                 (0.69, self.reload_same), (0.76, self.write_entry), (0.79, self.write_step),
                 (0.82, self.replace_entry), (0.85, self.delete_state), (0.89, self.assign_data),
                 (0.92, self.add_group), (0.96, self.zero_grad), (1.0, self.read_state)]
        for _ in range(actions):
            r = self.rng.random()
            next(action for bound, action in table if r < bound)()
        self.check_state("at the end")


@pytest.mark.parametrize("placement", ["one device", "two devices"])
@pytest.mark.parametrize("info", RECORDS, ids=lambda info: info.name)
def test_random_sequences_follow_torch(info, placement):
    if placement == "two devices" and len(jax.devices()) < 2:
        pytest.skip("needs two devices (tests/conftest.py simulates eight CPU devices)")
    for seed in range(SEQUENCES):
        Sequence(info, seed, placement).run(ACTIONS)
