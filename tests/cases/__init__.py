"""The one table of parity cases: every family module contributes OPTAX_CASES, and TORCH_CASES rows that the
facade optimizers' records (OPTIMIZERS, tests/cases/optimizers.py) gather by class.

optax.contrib's optimizers and wrappers (tests/cases/contrib.py) keep their own tables,
CONTRIB_CASES and WRAPPER_CASES, which tests/test_contrib.py runs with whole-state checks.
"""

from tests.cases import (accumulators, adam_variants, beyond, core, factored, preconditioned, projected, second_order,
                         step_rules, wrappers)
from tests.cases.contrib import CONTRIB_CASES as CONTRIB_CASES
from tests.cases.contrib import WRAPPER_CASES as WRAPPER_CASES

_FAMILIES = (core, accumulators, adam_variants, step_rules, factored, second_order, beyond, projected, preconditioned,
             wrappers)

OPTAX_CASES = [case for family in _FAMILIES for case in family.OPTAX_CASES]

# The facade optimizers' records (tests/cases/optimizers.py); their dense-gradient option sets are the torch rows.
from tests.cases.optimizers import OPTIMIZERS as OPTIMIZERS  # noqa: E402

TORCH_CASES = [case for info in OPTIMIZERS if info.gradients == "dense" for case in info.cases]

