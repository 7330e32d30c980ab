"""A real single-node Slurm cluster (Debian's slurm-wlm and munge) started on localhost for the test:
``bench --executor slurm`` runs a 4-run job array end to end, and a rerun submits nothing.

Needs root and the binaries (``.ci/run`` installs them); skipped with the reason otherwise. Every wait
has a timeout; the daemons are stopped by their pids when the test ends, pass or fail.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.records import RecordStore

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
BINARIES = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue")


def _which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _wait(check, timeout, what):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def _started_in(base: Path) -> list[int]:
    """Pids of processes working in ``base`` (this test's cluster folder) or naming it on their command line."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(proc.name) != os.getpid() and (cwd.startswith(str(base)) or str(base) in cmd):
            out.append(int(proc.name))
    return out


@pytest.fixture
def slurm_cluster(tmp_path, monkeypatch):
    missing = [b for b in BINARIES if not _which(b)]
    if missing:
        pytest.skip(f"Slurm/munge binaries absent ({', '.join(missing)}): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged needs root")
    host, pids = socket.gethostname().split(".")[0], []
    base = tmp_path / "slurm"
    for sub in ("state", "spool", "log", "run"):
        (base / sub).mkdir(parents=True)
    # munge: a key if there is none, its folders owned by munge, the daemon as munge.
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
    for d in ("/etc/munge", "/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    if _run(["munge", "-n"]).returncode != 0:  # none running yet
        assert _run(["runuser", "-u", "munge", "--", _which("munged")]).returncode == 0, "munged did not start"
        pid_file = Path("/run/munge/munged.pid")
        _wait(pid_file.exists, 10, "munged's pid file")
        pids.append(int(pid_file.read_text()))
    check = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, text=True, timeout=10)
    assert "STATUS:" in check.stdout and "Success" in check.stdout, check.stdout + check.stderr
    mem_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    conf = base / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=local", f"SlurmctldHost={host}(127.0.0.1)", "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none", "SlurmUser=root", "SlurmdUser=root", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none", "ReturnToService=2",
        f"StateSaveLocation={base}/state", f"SlurmdSpoolDir={base}/spool",
        f"SlurmctldPidFile={base}/run/slurmctld.pid", f"SlurmdPidFile={base}/run/slurmd.pid",
        f"SlurmctldLogFile={base}/log/slurmctld.log", f"SlurmdLogFile={base}/log/slurmd.log",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={int(mem_mb * 0.8)} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    monkeypatch.setenv("SLURM_CONF", str(conf))  # daemons, sbatch, squeue and the jobs read this one
    try:
        for daemon, pid_name in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
            started = _run([_which(daemon)], timeout=30)
            assert started.returncode == 0, f"{daemon} did not start: {started.stderr}"
            pid_file = base / "run" / pid_name
            # The daemon creates the file before it writes its pid: wait for the pid, not the file.
            _wait(lambda: pid_file.exists() and pid_file.read_text().strip(), 15, f"{daemon}'s pid file")
            pids.append(int(pid_file.read_text()))
        _wait(lambda: "idle" in _run(["sinfo", "-h", "-o", "%t"]).stdout, 30, "the node to be idle in sinfo")
        yield base
    finally:
        try:  # jobs first: a slurmstepd whose slurmd is gone waits for it forever
            _wait(lambda: not _run(["squeue", "-h"], timeout=10).stdout.strip(), 30, "the queue to empty")
        except (AssertionError, subprocess.TimeoutExpired):
            _run(["scancel", "--full", "--user", "root"], timeout=10)
            time.sleep(2)
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                _wait(lambda: not Path(f"/proc/{pid}").exists(), 15, f"daemon {pid} to exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
        for pid in _started_in(base):  # anything of this cluster left behind (job steps)
            os.kill(pid, signal.SIGKILL)
        for log in (base / "log").glob("*.log"):
            print(f"--- {log.name} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))


def test_four_run_array_on_real_slurm(slurm_cluster, tmp_path, capsys):
    results = tmp_path / "results"
    grid = ["bench", "--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--noise", "sym-20,asym-0-20",
            "--seeds", "30,40", "--device", "cpu", "--executor", "slurm", "--partition", "debug", "--time", "5",
            "--results", str(results)]
    assert main(grid) == 0
    out = capsys.readouterr().out
    assert "submitted 4 runs as 4 slurm job(s)" in out and "[4/4]" in out
    store = RecordStore(results)
    found = sorted(results.rglob("*.json"))
    assert len(found) == 4
    job_ids = set()
    for path in found:
        record = store.read(path)
        where = record["environment"]["executor"]
        assert record["status"] == "done" and where["name"] == "slurm" and "_" in where["job_id"]
        job_ids.add(where["job_id"].split("_")[0])
    assert len(job_ids) == 1  # one job array
    assert main(grid) == 0
    assert "4 already done, 0 to run" in capsys.readouterr().out
