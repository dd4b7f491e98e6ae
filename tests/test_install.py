"""The install lines of the Makefile, README and docs/scale.md work from a fresh clone in principle."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_lines(path: Path) -> list[str]:
    """The `pip install` commands of a file, in order."""
    return [line for line in path.read_text().splitlines() if re.search(r"pip install", line)]


def test_setuptools_is_installed_before_deepspeed_is_built_without_isolation():
    # --no-build-isolation builds DeepSpeed's setup.py with the venv's own setuptools, which a Python >= 3.12 venv
    # lacks; so it must be installed by an earlier line (with torch and wheel), in every place that gives the lines.
    for name in ("Makefile", "README.md", "docs/scale.md"):
        lines = install_lines(ROOT / name)
        deepspeed = next(i for i, line in enumerate(lines) if "--no-build-isolation" in line)
        before = " ".join(lines[:deepspeed])
        assert re.search(r"\bsetuptools\b", before) and re.search(r"\bwheel\b", before), name
        assert re.search(r"torch==", before), name


def test_gpu_check_installs_setuptools_before_its_builds_without_isolation():
    # benchmarks/gpu_check.sh builds DeepSpeed and the editable project without isolation: the environment's
    # setuptools must be new enough for pyproject's editable build (>= 68), so its first install line brings it.
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text().splitlines()
    lines = [line for line in script if "pip install" in line and not line.lstrip().startswith("#")]
    no_isolation = next(i for i, line in enumerate(lines) if "--no-build-isolation" in line)
    assert '"setuptools>=68"' in " ".join(lines[:no_isolation])
