"""The leaderboard reads run records and method manifests only: rendering a board never loads torch."""
import subprocess
import sys
from pathlib import Path

from record_factory import board_records, write_records

REPO = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter: the test session itself has torch loaded long before this test.
RENDER = """
import sys
import leaderboard
assert "torch" not in sys.modules, "import leaderboard loaded torch"
from benchmark.records import RecordStore
from leaderboard import tables
from leaderboard.report import render
result = leaderboard.build(sys.argv[1], sys.argv[2])  # records, method manifests, statistics, plots, site
assert result.rows and result.page.is_file()
assert "FlexCare (BCE)" in tables.render(result.board, "simple")  # ehrbench leaderboard's text tables
assert "[mixed data]" in render([r for _, r, _ in RecordStore(sys.argv[1]).scan()])  # ehrbench table
assert "torch" not in sys.modules, "building the leaderboard loaded torch; loaded: " + ", ".join(
    sorted(m for m in sys.modules if m.startswith("benchmark.")))
print(leaderboard.__file__)
"""


def test_building_the_leaderboard_never_imports_torch(tmp_path):
    write_records(tmp_path / "results", board_records())
    proc = subprocess.run([sys.executable, "-c", RENDER, str(tmp_path / "results"), str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == REPO / "leaderboard" / "__init__.py"  # this checkout's package
