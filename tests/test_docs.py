"""The documentation: the site builds with warnings as errors, and every code block of the guide runs.

- The strict MkDocs build catches broken links, missing pages and docstrings
  that mkdocstrings cannot render.
- Each guide page's ```python blocks run top to bottom, in order, in a fresh
  interpreter (JAX's defaults, not the test suite's float64), so the docs show
  only code that works. A block preceded by ``<!-- no-run -->`` is shown but not
  run (installation commands, multi-host recipes).
- Every module with a public ``__all__`` has a ``::: module`` entry in docs/api.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import COLLECTIVE_PATIENCE

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE_PAGES = sorted(p for p in DOCS.glob("*.md"))
FENCE = re.compile(r"^(?P<marker><!-- no-run -->\s*\n)?```python\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(MPLBACKEND="Agg", NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT), XLA_FLAGS=COLLECTIVE_PATIENCE)
    return env


def python_blocks(page: Path) -> list[str]:
    """The runnable ```python blocks of a page, in order."""
    return [m["code"] for m in FENCE.finditer(page.read_text()) if not m["marker"]]


def test_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip("mkdocs-material and mkdocstrings[python] are not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d",
         str(tmp_path / "site")],
        cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    assert (tmp_path / "site" / "index.html").exists()


@pytest.mark.parametrize("page", [page for page in GUIDE_PAGES if python_blocks(page)], ids=lambda p: p.name)
def test_guide_code_runs(page, tmp_path):
    blocks = python_blocks(page)
    script = tmp_path / f"{page.stem}.py"
    script.write_text("\n\n".join(blocks))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_clean_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"the python blocks of docs/{page.name} failed:\n{result.stderr[-6000:]}"


def _public_modules() -> list[str]:
    import gradtx

    names = []
    for info in pkgutil.walk_packages(gradtx.__path__, "gradtx."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        if getattr(module, "__all__", None):
            names.append(info.name)
    return names


def test_api_reference_covers_every_public_module():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), re.MULTILINE))
    missing = [name for name in _public_modules() if name not in documented]
    assert not missing, f"modules with a public __all__ but no '::: module' entry in docs/api/*.md: {missing}"
