"""Clean code: no unused imports or variables in the library or the tests (ruff's F401 and F841)."""
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_no_unused_imports_or_variables():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed: it is in the dev extras (pip install -e '.[dev]')"
    result = subprocess.run([ruff, "check", "--select", "F401,F841", "--no-cache", "ginn", "tests"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
