"""Test-wide settings: float64 available, strict promotion, warnings are errors (see pyproject)."""

import os

# Eight simulated devices; their collectives wait up to 15 minutes for each other (XLA:CPU gives up after 40 s,
# which a 2-core machine running two test workers can exceed while one device's thread waits for a core).
COLLECTIVE_PATIENCE = "--xla_cpu_collective_call_terminate_timeout_seconds=900"
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 " + COLLECTIVE_PATIENCE)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
