"""The declarations' conventions, checked over every optimizer record.

Which param-group keys reach a chain is declared, not read from the builder's
signature: ``chain_options`` (keys of the optimizer's ``defaults``) and
``group_options`` (per-group keys that are no constructor option, such as a
group's ``step`` kept by the declaration). The builder takes exactly those and
the ``use_<option>`` flags; any other key (a scheduler's ``initial_lr``, a
user's own label) never reaches the chain nor the compiled program's cache key.
Declaration modules import only public names from outside ``gradtx.optim``.
"""

import ast
import importlib
import inspect
from pathlib import Path

import jax.numpy as jnp
import pytest

from gradtx.optim import _engine
from tests.cases import OPTIMIZERS

CHAINED = [info for info in OPTIMIZERS if info.cls.chain_builder is not None]
# Keys a scheduler, SWA or a user puts in a param group; none is an option of any optimizer.
EXTRA_KEYS = {"initial_lr": 0.125, "swa_lr": 0.05, "name": "encoder", "my_label": ("a", 1)}


def _optimizer(info):
    return info.cls([jnp.ones((4, 3)), jnp.ones((3,))] if info.params == "any" else [jnp.ones((4, 3))],
                    **info.state_options)


def _routing_problems(cls, defaults: dict, group: dict) -> list[str]:
    builder = cls.chain_builder
    takes = inspect.signature(builder).parameters
    flags = {f"use_{option}" for option in cls.switches} | set(cls.flags(group))
    routed = set(_engine.routed_options(cls))
    name = cls.__name__
    problems = [f"{name}: {builder.__name__} takes **{p.name}; list its keywords" for p in takes.values()
                if p.kind is p.VAR_KEYWORD]
    problems += [f"{name} routes option {option!r}, which {builder.__name__} does not take" for option in
                 sorted(routed - set(takes))]
    problems += [f"{name}: {builder.__name__} takes {option!r}, which {name} does not route (add it to "
                 "chain_options, or to group_options for a per-group key that is no constructor option)"
                 for option in sorted(set(takes) - routed - flags)
                 if takes[option].kind is not inspect.Parameter.VAR_KEYWORD]
    problems += [f"{name}.chain_options names {option!r}, which is not a key of its defaults (a per-group key "
                 "goes in group_options)" for option in cls.chain_options if option not in defaults]
    problems += [f"{name} routes the facade's key {option!r} to its chain" for option in
                 sorted(routed & _engine.NOT_OPTIONS)]
    problems += [f"{name}: flag {flag!r} is also a routed option" for flag in sorted(flags & routed)]
    return problems


@pytest.mark.parametrize("info", CHAINED, ids=lambda info: info.name)
def test_the_builder_takes_exactly_the_routed_options(info):
    opt = _optimizer(info)
    problems = _routing_problems(info.cls, opt.defaults, opt.param_groups[0])
    assert not problems, "\n".join(problems)


def test_a_mismatch_between_declaration_and_builder_names_the_class_and_the_option():
    from gradtx.optim import SGD

    class Typo(SGD):
        chain_options = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximise")

    opt = SGD([jnp.ones(3)], lr=0.1)
    problems = _routing_problems(Typo, opt.defaults, opt.param_groups[0])
    assert "Typo routes option 'maximise', which sgd_chain does not take" in problems
    assert any(p.startswith("Typo: sgd_chain takes 'maximize', which Typo does not route") for p in problems)


@pytest.mark.parametrize("info", CHAINED, ids=lambda info: info.name)
def test_extra_group_keys_never_reach_the_chain(info):
    opt = _optimizer(info)
    cls, group = info.cls, opt.param_groups[0]
    extras = {key: value for key, value in EXTRA_KEYS.items() if key not in _engine.routed_options(cls)}
    assert extras.keys() >= {"initial_lr", "swa_lr", "my_label"}
    assert _engine.split_options(cls, {**group, **extras}) == _engine.split_options(cls, group)


def test_extra_group_keys_compile_nothing_new():
    from gradtx.optim import Adam

    opt = Adam([jnp.ones((4, 3)), jnp.ones(3)], lr=0.1)
    grads = [jnp.ones((4, 3)), jnp.ones(3)]
    opt.step(grads)
    opt.step(grads)
    before = _engine.trace_count()
    expected = Adam([jnp.ones((4, 3)), jnp.ones(3)], lr=0.1)
    for _ in range(3):
        expected.step(grads)
    opt.param_groups[0].update(EXTRA_KEYS)
    opt.step(grads)
    assert _engine.trace_count() == before
    for ours, theirs in zip(opt.params, expected.params):
        assert (ours == theirs).all()


def test_a_chain_declaration_without_chain_options_is_told_what_to_add():
    from gradtx.optim import Optimizer
    from gradtx.optim.chains import sgd_chain

    class Bare(Optimizer):
        chain_builder = staticmethod(sgd_chain)

        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

    opt = Bare([jnp.ones(3)])
    with pytest.raises(TypeError, match="Bare declares a chain_builder but no chain_options"):
        opt.step([jnp.ones(3)])


# --- declaration modules import no private helper of another package --------------------------------------


def _private_imports(path: Path) -> list[str]:
    """``module.name`` of each import of a private name (or from a private module) outside gradtx.optim."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported = [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            imported = [(alias.name, "") for alias in node.names]
        else:
            continue
        for module, name in imported:
            if module.split(".")[0] != "gradtx" or module == "gradtx.optim" or module.startswith("gradtx.optim."):
                continue
            if any(part.startswith("_") for part in module.split(".")) or name.startswith("_"):
                found.append(f"{module}.{name}" if name else module)
    return found


DECLARATION_MODULES = sorted({info.cls.__module__ for info in OPTIMIZERS})


@pytest.mark.parametrize("module", DECLARATION_MODULES)
def test_declarations_import_no_private_name_from_outside_the_facade(module):
    path = Path(importlib.import_module(module).__file__)
    assert path.name.startswith("_")
    assert _private_imports(path) == [], f"{path.name} imports private names; import their public paths"


# --- torch's range checks: NaN passes where the reference's check lets it through -------------------------

NAN_ROWS = [(name, option) for name, options in (("SGD", ("lr", "momentum", "weight_decay")),
                                                 ("Adam", ("lr", "eps", "weight_decay")),
                                                 ("SGDScheduleFree", ("lr", "weight_decay")),
                                                 ("Adadelta", ("rho",)), ("SparseAdam", ("lr",)))
            for option in options]


@pytest.mark.parametrize("name,option", NAN_ROWS)
def test_a_nan_option_is_refused_or_accepted_as_by_the_reference(name, option):
    import torch

    from tests.cases.optimizers import BY_NAME

    info = BY_NAME[name]

    def outcome(make, params):
        try:
            make(params, **{option: float("nan")})
        except ValueError as error:
            return str(error)
        return "accepted"

    assert outcome(info.cls, [jnp.zeros(2)]) == outcome(info.reference, [torch.zeros(2, requires_grad=True)])
