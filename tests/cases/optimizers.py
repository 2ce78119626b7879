"""One declarative record per facade optimizer: the table every facade suite iterates.

After torch's ``OptimizerInfo`` (torch/testing/_internal/common_optimizers.py): a record names
the class in both faces, carries its option sets and says what it supports, so each suite
generates only the combinations that apply (no skips, no test branching on a name). A new
optimizer is a new record here; tests/test_optimizer_records.py fails for a class without one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gradtx import optim
from tests.cases import (accumulators, adam_variants, beyond, core, factored, preconditioned, projected, step_rules)
from tests.harness import TorchCase

_FAMILY_ROWS = [case for family in (core, accumulators, adam_variants, step_rules, factored, beyond, projected,
                                    preconditioned) for case in family.TORCH_CASES]


def rising(start: float, stop: float) -> Callable[[Any], Any]:
    """A warm-up from ``start`` towards ``stop``, halving the distance each step."""
    return lambda count: stop - (stop - start) * 0.5 ** count


def falling(start: float) -> Callable[[Any], Any]:
    """``start / (1 + count)``."""
    return lambda count: start / (1 + count)


@dataclass(frozen=True)
class ErrorInput:
    """Options the constructor rejects: the reference class raises ``error`` with the same message."""

    kwargs: dict
    error: type = ValueError

    @property
    def id(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.kwargs.items())


@dataclass(frozen=True)
class ScheduledOption:
    """A hyperparameter given as a schedule ``count -> value``; ``index`` picks one element of a tuple option."""

    option: str
    schedule: Callable[[Any], Any]
    fixed: dict = field(default_factory=dict)  # the other options of the run
    index: int | None = None
    label: str = ""  # deterministic test id (no function reprs)


@dataclass(frozen=True)
class OptimizerInfo:
    """What the tests know about one facade optimizer.

    Fields:
        name: the class name in ``gradtx.optim`` and in ``module``.
        module: where the reference class lives (torch.optim, or a torch-based package pinned in the
            test extra: schedulefree, prodigyopt, pytorch_optimizer).
        cases: the option sets compared step by step against the reference (``TorchCase`` rows; a row
            with ``chain`` also runs through that functional chain in tests/test_torch_parity.py).
        tiers: the implementation tiers the class accepts ("fused" is the default; "foreach" and
            "for-loop" are ``foreach=True`` / ``foreach=False``); all of them must agree bit for bit.
        closure: ``step`` needs a closure (it evaluates the loss itself: LBFGS, SophiaH).
        train_mode: the class steps only after ``opt.train()`` (schedule-free optimizers).
        needs_mesh: the constructor takes a device ``mesh=`` (the tests pass two simulated devices).
        params: the parameter kinds it takes: "any" (0-d to n-d), or "matrices" (2-D only).
        gradients: "dense", or "sparse" where the reference takes sparse gradients only, so the dense
            parity suite does not apply (its sparse comparison is in tests/test_second_order.py).
        complex_options: options for the comparison on a complex parameter against the reference;
            None where complex parameters are not compared.
        elementwise: the step is elementwise (``cls.elementwise``).
        packed: the default tier keeps a group's small parameters in one flat buffer (an elementwise step
            whose state entries all have the parameter's shape; schedule-free's per-group sums do not).
        sharding: under ZeroRedundancyOptimizer the numbers are "exact" (bit for bit) or agree to
            "rounding" (a reduction over a split axis sums in another order); None where not run sharded.
        state_options: the options that give it the most state (resume, state_dict and packing tests).
        schedules: hyperparameters that take a schedule, each compared with editing param_groups by hand.
        error_inputs: options its constructor rejects, with the reference's exception type and message.
    """

    name: str
    module: str = "torch.optim"
    cases: tuple[TorchCase, ...] = ()
    tiers: tuple[str, ...] = ("fused", "foreach", "for-loop")
    closure: bool = False
    train_mode: bool = False
    needs_mesh: bool = False
    params: str = "any"
    gradients: str = "dense"
    complex_options: dict | None = None
    elementwise: bool = False
    packed: bool = False
    sharding: str | None = None
    state_options: dict = field(default_factory=dict)
    schedules: tuple[ScheduledOption, ...] = ()
    error_inputs: tuple[ErrorInput, ...] = ()

    @property
    def cls(self) -> type:
        """The facade class; a missing one fails (AttributeError), it is never filtered out."""
        return getattr(optim, self.name)

    @property
    def reference(self) -> type:
        return getattr(importlib.import_module(self.module), self.name)

    @property
    def chain(self) -> Callable[..., Any] | None:
        """The functional chain its rows name (it takes the class's options), or None."""
        return next((case.chain for case in self.cases if case.chain is not None), None)


def _rows(name: str) -> tuple[TorchCase, ...]:
    rows = tuple(case for case in _FAMILY_ROWS if case.torch_name == name)
    assert rows, f"no TorchCase rows for {name}"
    return rows


def _errors(*option_sets: dict) -> tuple[ErrorInput, ...]:
    return tuple(ErrorInput(kwargs) for kwargs in option_sets)


_PO, _SF = "pytorch_optimizer", "schedulefree"
_ADAM_SCHEDULES = (
    ScheduledOption("betas", rising(0.5, 0.9), {"lr": 0.05}, index=0, label="betas[0]"),
    ScheduledOption("betas", rising(0.9, 0.999), {"lr": 0.05, "amsgrad": True}, index=1, label="betas[1]-amsgrad"),
    ScheduledOption("eps", falling(1e-2), {"lr": 0.05}, label="eps"),
    ScheduledOption("weight_decay", falling(0.3), {"lr": 0.05}, label="weight_decay"),
)

OPTIMIZERS: tuple[OptimizerInfo, ...] = (
    OptimizerInfo("SGD", cases=_rows("SGD"), elementwise=True, packed=True, sharding="exact",
                  state_options={"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
                  error_inputs=_errors(dict(lr=-0.1), dict(momentum=-0.5), dict(weight_decay=-0.1),
                                       dict(lr=0.1, nesterov=True))),
    OptimizerInfo("Adam", cases=_rows("Adam"), elementwise=True, packed=True, sharding="exact",
                  state_options={"lr": 0.05, "amsgrad": True, "weight_decay": 0.1}, schedules=_ADAM_SCHEDULES,
                  error_inputs=_errors(dict(lr=-0.1), dict(eps=-1.0), dict(betas=(1.0, 0.999)),
                                       dict(betas=(0.9, -0.1)), dict(weight_decay=-0.1))),
    OptimizerInfo("AdamW", cases=_rows("AdamW"), elementwise=True, packed=True, sharding="exact",
                  state_options={"lr": 0.05, "amsgrad": True},
                  schedules=(ScheduledOption("weight_decay", falling(0.3), {"lr": 0.05}, label="weight_decay"),),
                  error_inputs=_errors(dict(lr=-0.1), dict(betas=(0.9, 1.5)))),
    OptimizerInfo("Adagrad", cases=_rows("Adagrad"), elementwise=True, packed=True,
                  state_options={"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
                  complex_options=dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.5),
                  error_inputs=_errors(dict(lr=-0.1), dict(lr_decay=-1.0), dict(initial_accumulator_value=-1.0),
                                       dict(eps=-1.0), dict(weight_decay=-1.0))),
    OptimizerInfo("RMSprop", cases=_rows("RMSprop"), elementwise=True, packed=True, sharding="exact",
                  state_options={"lr": 0.01, "momentum": 0.9, "centered": True},
                  complex_options=dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1),
                  schedules=(ScheduledOption("alpha", rising(0.5, 0.99), {"lr": 0.01}, label="alpha"),
                             ScheduledOption("momentum", rising(0.1, 0.9), {"lr": 0.01, "centered": True},
                                             label="momentum-centered")),
                  error_inputs=_errors(dict(momentum=-0.5), dict(alpha=-0.5), dict(weight_decay=-0.5))),
    OptimizerInfo("Adadelta", cases=_rows("Adadelta"), elementwise=True, packed=True, state_options={"weight_decay": 0.1},
                  complex_options=dict(lr=0.5, weight_decay=0.1, maximize=True),
                  error_inputs=_errors(dict(lr=-1.0), dict(rho=1.5), dict(rho=-0.5), dict(eps=-1.0))),
    OptimizerInfo("Adamax", cases=_rows("Adamax"), elementwise=True, packed=True, state_options={"lr": 0.05},
                  complex_options=dict(lr=0.05, weight_decay=0.1),
                  schedules=(ScheduledOption("betas", rising(0.5, 0.9), {"lr": 0.05}, index=0, label="betas[0]"),),
                  error_inputs=_errors(dict(betas=(0.9, 1.0)), dict(betas=(-0.1, 0.9)), dict(weight_decay=-1.0))),
    OptimizerInfo("NAdam", cases=_rows("NAdam"), elementwise=True, packed=True,
                  state_options={"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True},
                  schedules=(ScheduledOption("betas", rising(0.5, 0.9), {"lr": 0.05}, index=0, label="betas[0]"),),
                  error_inputs=_errors(dict(momentum_decay=-0.1), dict(betas=(1.0, 0.9)))),
    OptimizerInfo("RAdam", cases=_rows("RAdam"), elementwise=True, packed=True, state_options={"lr": 0.05},
                  error_inputs=_errors(dict(eps=-1.0))),
    OptimizerInfo("Rprop", cases=_rows("Rprop"), elementwise=True, packed=True, state_options={"lr": 0.05},
                  error_inputs=_errors(dict(lr=-1.0), dict(etas=(1.5, 1.2)))),
    OptimizerInfo("ASGD", cases=_rows("ASGD"), elementwise=True, packed=True, state_options={"lr": 0.05, "t0": 2},
                  error_inputs=_errors(dict(lr=-1.0), dict(weight_decay=-1.0))),
    OptimizerInfo("Adafactor", cases=_rows("Adafactor"), sharding="rounding", state_options={"lr": 0.05}),
    OptimizerInfo("Muon", cases=_rows("Muon"), params="matrices", state_options={"lr": 0.05}),
    # torch's LBFGS takes no tier options; these rows are torch's own configurations, line search included
    OptimizerInfo("LBFGS", tiers=("fused",), closure=True, state_options={"lr": 0.5, "max_iter": 3, "history_size": 2},
                  cases=tuple(TorchCase("LBFGS", kwargs, closure=True, steps=6, dtypes=("float64",)) for kwargs in (
                      dict(),
                      dict(lr=0.5, max_iter=5, history_size=3),
                      dict(lr=0.1, max_iter=3, tolerance_change=1e-3, tolerance_grad=1e-2, history_size=3),
                      dict(lr=0.8, max_iter=7, max_eval=9, history_size=3, line_search_fn="strong_wolfe"))),
                  error_inputs=_errors(dict(lr=-1.0))),
    OptimizerInfo("SparseAdam", tiers=("fused",), gradients="sparse", state_options={"lr": 0.05},
                  cases=(TorchCase("SparseAdam", dict(lr=0.05), steps=6),
                         TorchCase("SparseAdam", dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, maximize=True), steps=6)),
                  error_inputs=_errors(dict(lr=0.0), dict(eps=0.0), dict(betas=(0.9, 1.0)))),
    OptimizerInfo("ZeroRedundancyOptimizer", module="torch.distributed.optim", needs_mesh=True,
                  state_options={"optimizer_class": optim.Adam, "lr": 0.05, "amsgrad": True}),
    OptimizerInfo("AdamWScheduleFree", module=_SF, cases=_rows("AdamWScheduleFree"), train_mode=True, elementwise=True,
                  state_options={"lr": 0.05, "warmup_steps": 2, "weight_decay": 0.1}),
    OptimizerInfo("SGDScheduleFree", module=_SF, cases=_rows("SGDScheduleFree"), train_mode=True, elementwise=True,
                  state_options={"lr": 0.05, "momentum": 0.8},
                  error_inputs=_errors(dict(lr=-1.0), dict(momentum=1.0), dict(weight_decay=-0.1))),
    OptimizerInfo("RAdamScheduleFree", module=_SF, cases=_rows("RAdamScheduleFree"), train_mode=True,
                  elementwise=True, state_options={"lr": 0.05}),
    OptimizerInfo("Prodigy", module="prodigyopt", cases=_rows("Prodigy"),
                  state_options={"lr": 1.0, "weight_decay": 0.1},
                  error_inputs=_errors(dict(d0=0.0), dict(lr=0.0), dict(eps=0.0), dict(betas=(0.9, 1.0)))),
    OptimizerInfo("ADOPT", module=_PO, cases=_rows("ADOPT"), state_options={"lr": 0.05, "weight_decay": 0.1}),
    OptimizerInfo("AdEMAMix", module=_PO, cases=_rows("AdEMAMix"), state_options={"lr": 0.05, "alpha": 3.0}),
    # GaLore projecting the matrix
    OptimizerInfo("GaLore", module=_PO, cases=_rows("GaLore"),
                  state_options={"lr": 0.05, "rank": 2, "update_proj_gap": 2, "scale": 1.0, "projection_type": "std"}),
    # SophiaH and Kron draw random probes: compared on injected probes in tests/test_projected.py. SophiaH estimates
    # its Hessian from the loss at step 1; Kron's rows with update probability 0 draw no probe (no state_dict
    # carries a PRNG state).
    OptimizerInfo("SophiaH", module=_PO, closure=True, state_options={"lr": 0.05, "weight_decay": 0.1}),
    OptimizerInfo("Kron", module=_PO, cases=_rows("Kron"),
                  state_options={"lr": 0.05, "weight_decay": 0.1, "pre_conditioner_update_probability": 0.0}),
    OptimizerInfo("SOAP", module=_PO, cases=_rows("SOAP"), state_options={"lr": 0.05, "precondition_frequency": 2}),
    OptimizerInfo("Shampoo", module=_PO, cases=_rows("Shampoo"),
                  state_options={"lr": 0.05, "momentum": 0.5, "matrix_eps": 0.1}),
    OptimizerInfo("MARS", module=_PO, cases=_rows("MARS"), state_options={"lr": 0.05, "ams_bound": True,
                                                                          "weight_decay": 0.1}),
    OptimizerInfo("LaProp", module=_PO, cases=_rows("LaProp"),
                  state_options={"lr": 0.05, "centered": True, "ams_bound": True, "weight_decay": 0.1}),
    OptimizerInfo("SCION", module=_PO, cases=_rows("SCION"), state_options={"lr": 0.05, "weight_decay": 0.1}),
    OptimizerInfo("AdamMini", module=_PO, state_options={"lr": 0.05, "num_embeds": 4, "num_heads": 2}),
)

BY_NAME = {info.name: info for info in OPTIMIZERS}
assert len(BY_NAME) == len(OPTIMIZERS), "one record per optimizer"
assert {case.torch_name for case in _FAMILY_ROWS} <= set(BY_NAME), "every TorchCase row belongs to a record"
