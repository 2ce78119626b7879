"""A scheduler's ``load_state_dict`` checks the values before writing anything, for every scheduler class.

A string or ``None`` where the scheduler keeps a number is a TypeError naming the
key and the param group; the state of a run with another number of param groups
is a ValueError; a refused load changes neither the scheduler nor the optimizer.
"""

from __future__ import annotations

import copy

import pytest

from gradtx.optim import lr_scheduler as ours
from tests.test_lr_scheduler import CASES, make_optimizer


def _stepped(case, lrs=(0.1, 0.02)):
    optimizer = make_optimizer(case.kind, lrs)
    scheduler = case.build(ours, optimizer)
    for t in range(1, 4):
        case.advance(scheduler, t)
    return optimizer, scheduler


def _groups(optimizer):
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def _holder(sd, key):
    """The state dict that keeps ``key``: this one, or that of the first nested scheduler keeping it."""
    if key in sd:
        return sd
    return next(h for child in sd.get("_schedulers", []) if (h := _holder(child, key)) is not None) \
        if any(_holder(child, key) is not None for child in sd.get("_schedulers", [])) else None


def _set(key, value):
    def edit(sd):
        holder = _holder(sd, key) or sd
        holder[key] = value(holder[key]) if callable(value) else value
        return sd
    return edit


def _item(key, index, value):
    def edit(sd):
        sd[key] = list(sd[key])
        sd[key][index] = value
        return sd
    return edit


# (what is wrong, the edit, the error, what the message names)
BAD = [
    ("a string lr", _item("_last_lr", 0, "abc"), TypeError, r"param group 0: '_last_lr' = 'abc'"),
    ("a None base lr", _item("base_lrs", 1, None), TypeError, r"param group 1: 'base_lrs' = None"),
    ("one lr for two groups", _set("_last_lr", lambda v: v[:1]), ValueError, r"'_last_lr' has 1 value"),
    ("a string epoch", _set("last_epoch", "3"), TypeError, r"'last_epoch' = '3'"),
    ("a list for one group's lr", _item("_last_lr", 1, [0.1]), TypeError, r"param group 1: '_last_lr' = \[0.1\]"),
    ("not a dict", lambda sd: [sd], TypeError, "must be a dict"),
    ("the optimizer inside", _set("optimizer", None), ValueError, "holds 'optimizer'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("what,edit,error,message", BAD, ids=[b[0] for b in BAD])
def test_a_refused_load_changes_neither_the_scheduler_nor_the_optimizer(case, what, edit, error, message):
    optimizer, scheduler = _stepped(case)
    good = scheduler.state_dict()
    bad = edit(copy.deepcopy(good))
    groups = copy.deepcopy(_groups(optimizer))
    with pytest.raises(error, match=message):
        scheduler.load_state_dict(bad)
    assert repr(scheduler.state_dict()) == repr(good)
    assert repr(_groups(optimizer)) == repr(groups)


def _three_group_state(case):
    """The state of a run with three param groups (cases given per-group lists for two: those lists extended)."""
    try:
        return _stepped(case, lrs=(0.1, 0.02, 0.05))[1].state_dict()
    except ValueError:
        state = _stepped(case)[1].state_dict()
        for key in ("base_lrs", "_last_lr"):
            state[key] = [*state[key], state[key][-1]]
        return state


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_state_of_another_number_of_param_groups_is_refused(case):
    optimizer, scheduler = _stepped(case)
    saved = _three_group_state(case)
    before, groups = scheduler.state_dict(), copy.deepcopy(_groups(optimizer))
    with pytest.raises(ValueError, match="3 value.*this optimizer has 2 param group"):
        scheduler.load_state_dict(saved)
    assert repr(scheduler.state_dict()) == repr(before)
    assert repr(_groups(optimizer)) == repr(groups)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_good_state_still_loads_and_resumes(case):
    optimizer, scheduler = _stepped(case)
    saved = scheduler.state_dict()
    other_optimizer, other = _stepped(case, lrs=(0.3, 0.4))
    other.load_state_dict(saved)
    assert [g["lr"] for g in other_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]
    case.advance(scheduler, 4)
    case.advance(other, 4)
    assert other.get_last_lr() == scheduler.get_last_lr()
