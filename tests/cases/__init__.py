"""The one table of parity cases: every family module contributes OPTAX_CASES and TORCH_CASES."""

from tests.cases import accumulators, adam_variants, core, factored, second_order, step_rules

_FAMILIES = (core, accumulators, adam_variants, step_rules, factored, second_order)

OPTAX_CASES = [case for family in _FAMILIES for case in family.OPTAX_CASES]
TORCH_CASES = [case for family in _FAMILIES for case in family.TORCH_CASES]

from tests.cases import preconditioned  # noqa: E402

OPTAX_CASES += preconditioned.OPTAX_CASES
TORCH_CASES += preconditioned.TORCH_CASES
