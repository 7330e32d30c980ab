"""The package as pip builds it: every data file it reads at run time is inside, and setuptools has
nothing to warn about (``pip install -e .`` is the README's first step)."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_the_data_files_and_building_it_warns_of_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "would be ignored" not in proc.stdout + proc.stderr
    names = set(zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist())
    shipped = [p for folder in ("benchmark/data/resources", "leaderboard/templates") for p in (ROOT / folder).iterdir()]
    assert shipped and {p.relative_to(ROOT).as_posix() for p in shipped} <= names
