"""The optimizer records against the classes they describe, and the checks a record alone drives.

Every facade optimizer has exactly one record (a missing class or a missing record fails), a record's
capabilities agree with its class's declaration, each error input raises the reference's exception with
the reference's message, and each record with complex options matches its reference on a complex parameter.
"""

import inspect
import re
from pathlib import Path

import jax.numpy as jnp
import pytest

from gradtx import optim
from tests import harness
from tests.cases import OPTIMIZERS
from tests.cases.optimizers import BY_NAME


def _facade_classes():
    return {name for name in optim.__all__ if inspect.isclass(getattr(optim, name))
            and issubclass(getattr(optim, name), optim.Optimizer) and getattr(optim, name) is not optim.Optimizer}


def test_every_facade_optimizer_has_one_record():
    assert set(BY_NAME) == _facade_classes()


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_record_agrees_with_its_class(info):
    cls = info.cls
    assert issubclass(cls, optim.Optimizer)
    assert info.elementwise == cls.elementwise and (info.elementwise or not info.packed)
    assert info.train_mode == callable(getattr(cls, "train", None))
    assert info.reference.__name__ == info.name  # the reference class exists under the record's name
    assert set(info.tiers) <= {"fused", "foreach", "for-loop"} and "fused" in info.tiers
    assert info.params in ("any", "matrices") and info.gradients in ("dense", "sparse")
    assert info.sharding in (None, "exact", "rounding")
    accepted = inspect.signature(cls.__init__).parameters
    takes_extra = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    assert ("foreach" in accepted or takes_extra) == (len(info.tiers) > 1)
    for case in info.cases:
        assert case.torch_name == info.name and case.module == info.module and case.closure == info.closure


ERRORS = [(info, error) for info in OPTIMIZERS for error in info.error_inputs]


@pytest.mark.parametrize("info,error", ERRORS, ids=[f"{info.name}-{error.id}" for info, error in ERRORS])
def test_error_inputs_raise_the_references_error(info, error):
    import torch

    with pytest.raises(error.error) as theirs:
        info.reference([torch.zeros(2, requires_grad=True)], **error.kwargs)
    with pytest.raises(error.error) as ours:
        info.cls([jnp.zeros(2)], **error.kwargs)
    assert str(ours.value) == str(theirs.value)


COMPLEX = [info for info in OPTIMIZERS if info.complex_options is not None]


@pytest.mark.parametrize("info", COMPLEX, ids=lambda info: info.name)
def test_complex_parameters_match_the_reference(info):
    harness.check_complex_facade_against_torch(info.name, info.complex_options, steps=4, seed=2)


def test_the_docs_list_the_optimizers_whose_default_tier_packs():
    """docs/facade.md names the packed optimizers; the records say which pack (test_facade_packing checks them)."""
    text = " ".join((Path(__file__).parent.parent / "docs" / "facade.md").read_text().split())
    listed = re.search(r"\(packed: ([A-Za-z, ]+)[;)]", text)
    assert listed, "docs/facade.md no longer lists the packed optimizers as '(packed: A, B, ...)'"
    assert set(listed.group(1).split(", ")) == {info.name for info in OPTIMIZERS if info.packed}
