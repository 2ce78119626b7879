"""Every notebook in notebooks/ runs top to bottom in a fresh python3 kernel (nbclient), without errors.

Notebooks are committed with their outputs cleared; this test executes them in
memory and writes nothing back. Each cell has a time limit, and plots use
matplotlib's Agg backend. The kernel gets JAX's defaults (the test suite's
float64 and simulated-device settings are removed from its environment).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 240


def _kernel_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    pythonpath = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(pythonpath), PYDEVD_DISABLE_FILE_VALIDATION="1")
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    try:
        client.execute(env=_kernel_env(), cwd=str(ROOT / "notebooks"))
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{str(error)[-4000:]}")
