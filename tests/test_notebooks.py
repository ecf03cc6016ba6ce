"""The library is the export of the notebooks, and the notebooks run."""
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree_diff(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [f"only in one side: {n}" for n in cmp.left_only + cmp.right_only] + cmp.diff_files
    return out + [d for sub in cmp.subdirs for d in _tree_diff(a / sub, b / sub)]


def test_nbdev_export_leaves_the_library_unchanged(tmp_path):
    for name in ["settings.ini", "setup.py", "README.md"]:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "nbs", tmp_path / "nbs")
    shutil.copytree(ROOT / "ginn", tmp_path / "ginn", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([Path(sys.executable).parent / "nbdev_export"], cwd=tmp_path, check=True)
    diff = _tree_diff(ROOT / "ginn", tmp_path / "ginn")
    assert not diff, f"ginn/ is not the export of nbs/ (run nbdev_export): {diff}"


def test_notebooks_pass_nbdev_test():
    result = subprocess.run([Path(sys.executable).parent / "nbdev_test", "--n_workers", "2"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
