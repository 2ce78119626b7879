"""The documentation: the site builds with warnings as errors, and every code block of the guide runs.

- The strict MkDocs build catches broken links, missing pages and docstrings
  that mkdocstrings cannot render.
- Each guide page's ```python blocks run top to bottom, in order, in a fresh
  interpreter (JAX's defaults, not the test suite's float64), so the docs show
  only code that works. A block preceded by ``<!-- no-run -->`` is shown but not
  run (installation commands, multi-host recipes).
- Every public function and class has an entry in docs/api (at one of its public paths).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
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


def _public_objects() -> dict[int, list[str]]:
    """Every public function and class of gradtx, with its public paths (private modules have a ``_``)."""
    import gradtx

    modules = ["gradtx"] + [info.name for info in pkgutil.walk_packages(gradtx.__path__, "gradtx.")
                            if not any(part.startswith("_") for part in info.name.split("."))]
    paths: dict[int, list[str]] = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith("gradtx"):
                paths.setdefault(id(obj), []).append(f"{module_name}.{name}")
    return paths


def _documented_paths() -> set[str]:
    """The paths the API pages render: ``::: module`` with its ``members:`` list, or with its whole ``__all__``."""
    documented = set()
    entry = re.compile(r"^::: ([\w.]+)\n((?:[ \t]+.*\n)*)", re.MULTILINE)
    for page in (DOCS / "api").glob("*.md"):
        for match in entry.finditer(page.read_text() + "\n"):
            target, options = match.groups()
            documented.add(target)
            members = re.search(r"members:\n((?:\s+- \w+\n)+)", options)
            if members:
                documented |= {f"{target}.{name}" for name in re.findall(r"- (\w+)", members[1])}
            elif "members: false" not in options and importlib.util.find_spec(target) is not None:
                documented |= {f"{target}.{name}" for name in getattr(importlib.import_module(target), "__all__", [])}
    return documented


def test_api_reference_covers_every_public_object():
    documented = _documented_paths()
    missing = sorted(paths[0] for paths in _public_objects().values() if not documented & set(paths))
    assert not missing, f"public objects with no entry in docs/api/*.md (list them under a '::: module'): {missing}"
