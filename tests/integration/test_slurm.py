"""cluster-slurm.sbatch, the Ray cluster inside a SLURM allocation, run for real.

Two ways. On any machine (CI has no SLURM): the script itself, with stand-ins for `srun` and `scontrol`
first on PATH and the SLURM variables of a 2-node allocation set; each stand-in srun step runs its command
here, as if on the node it names, so the head start, the wait for it, the worker start, the driver's search,
the interrupt at the time limit, the resume and the clean-up are the script's own. Where SLURM is
installed and we are root (slurmctld, slurmd, munged): a single-node SLURM of this test's own (its own
munge key and socket, ports and spool, under tmp_path) takes the script with `sbatch --wait`.

Every Ray these tests start lives under its own --temp-dir, which is how the tests find (and, if a test
fails half-way, stop) exactly their own Ray processes and no one else's."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from repo_paths import ROOT
from trial_files import results_so_far, study_trials, trial_dirs

SCRIPT = ROOT / "cluster-slurm.sbatch"
TINY = ["--method", "softmax", "--dataset", "digits", "--num-samples", "2", "--max-epochs", "2", "--splits", "0"]

STANDIN_SRUN = """#!/usr/bin/env bash
# Stand-in srun: runs the step here, as if on the node -w names, with that node's SLURM variables.
set -euo pipefail
node=""
while [ $# -gt 0 ]; do
  case "$1" in
    -w) node="$2"; shift 2 ;;
    --nodelist=*) node="${1#*=}"; shift ;;
    --*) shift ;;
    *) break ;;
  esac
done
export SLURMD_NODENAME="$node" SLURM_STEP_NODELIST="$node"
echo "$node" >> "$STANDIN_STEPS"
exec "$@"
"""
STANDIN_SCONTROL = """#!/usr/bin/env bash
# Stand-in scontrol: `scontrol show hostnames a,b,c` only.
[ "$1 $2" = "show hostnames" ] || { echo "stand-in scontrol: only 'show hostnames'" >&2; exit 1; }
tr ',' '\\n' <<<"$3"
"""


def own_processes(ray_tmp: Path) -> list[int]:
    """Processes of this test's jobs: their command line (Ray's) or their environment (everything the script
    started inherits OSRTUNE_RAY_TMPDIR) names this test's Ray folder, which no one else's has."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(ray_tmp).encode() in text:
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short Ray folder (Ray's socket paths below it must fit in 107 bytes; tmp_path's can be long).
    Whatever of this test's Ray is still running at the end (a failed test) is stopped."""
    path = Path(tempfile.mkdtemp(prefix="rso", dir="/tmp"))
    yield path
    for pid in own_processes(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(path, ignore_errors=True)


def standin_env(tmp_path: Path, ray_tmp: Path, job: str, nodes: list[str]) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", STANDIN_SRUN), ("scontrol", STANDIN_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "RAY_"))}
    return env | {
        "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
        "STANDIN_STEPS": str(tmp_path / f"steps-{job}"),
        "SLURM_JOB_ID": job, "SLURM_JOB_NODELIST": ",".join(nodes), "SLURMD_NODENAME": nodes[0],
        "SLURM_JOB_NUM_NODES": str(len(nodes)), "SLURM_CPUS_ON_NODE": "1", "SLURM_SUBMIT_DIR": str(ROOT),
        # The test's venv is the lock's (tests/unit checks it); setup_env.sh would only confirm that.
        "OSRTUNE_SKIP_SETUP": "1",
        "OSRTUNE_RAY_TMPDIR": str(ray_tmp / job), "OSRTUNE_STUDY_DIR": str(tmp_path / "head-disk"),
        "OSRTUNE_NODE_WAIT_S": "180",
    }


def run_script(env: dict[str, str], args: list[str], log: Path, interrupt_when=None) -> int:
    """Runs the script as sbatch would on the head node; with ``interrupt_when``, sends it SIGUSR1 (what
    `#SBATCH --signal=B:USR1@300` does before the time limit) once that returns True."""
    with log.open("w") as out:
        script = subprocess.Popen(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 480
            while script.poll() is None and time.monotonic() < deadline:
                if interrupt_when is not None and interrupt_when():
                    script.send_signal(signal.SIGUSR1)
                    interrupt_when = None
                time.sleep(0.5)
            if script.poll() is None:
                pytest.fail(f"the script did not end within 480 s; its output:\n{log.read_text()[-3000:]}")
            return script.returncode
        finally:
            if script.poll() is None:
                os.killpg(script.pid, signal.SIGKILL)


@pytest.mark.ray
def test_two_stand_in_nodes_stopped_at_the_time_limit_resume_on_another_head_and_leave_nothing_running(
        tmp_path, ray_tmp):
    # One search through both jobs (each job's Ray starts cost ~20 s here): the first on two nodes, stopped
    # as at its time limit; the next, on another head, resumes and finishes it.
    storage = tmp_path / "results"
    experiment = storage / "limit"
    # One trial at a time: the second waits for the first, so the stop lands before the search is done.
    args = ["--method", "softmax", "--dataset", "digits", "--num-samples", "2", "--max-epochs", "40", "--splits", "0",
            "--scheduler", "fifo", "--max-concurrent", "1", "--checkpoint-every", "5", "--storage-path", str(storage)]
    first = tmp_path / "first.log"
    # Stopped only once a periodic snapshot of the study has reached the experiment folder.
    env = standin_env(tmp_path, ray_tmp, "4201", ["n0", "n1"]) | {"OSRTUNE_STUDY_SNAPSHOT_S": "2"}
    status = run_script(env, [*args, "--name", "limit"], first, interrupt_when=lambda: (
        (experiment / "optuna.db").exists() and any(results_so_far(t) for t in trial_dirs(experiment))))
    out = first.read_text()
    assert status == 130, out[-3000:]
    # One step per node, the head's first, and both nodes in Ray before the search started.
    assert Path(env["STANDIN_STEPS"]).read_text().split() == ["n0", "n1"]
    assert "all 2 node(s) joined Ray" in out, out[-3000:]
    assert "stopped by SIGUSR1" in out, out[-3000:]
    assert not (experiment / "best.yaml").exists()
    assert (experiment / "optuna.db").exists() and not (tmp_path / "head-disk" / "limit.db").exists()
    assert own_processes(ray_tmp) == [], "the script left processes running"

    # The next job, on a head without the study on its disk: --resume brings it back and finishes the search.
    second = tmp_path / "second.log"
    status = run_script(standin_env(tmp_path, ray_tmp, "4202", ["n7"]),
                        ["--resume", "--name", "limit", "--storage-path", str(storage)], second)
    out = second.read_text()
    assert status == 0, out[-3000:]
    assert "restoring the Optuna study" in out
    best = yaml.safe_load((experiment / "best.yaml").read_text())
    assert best["method"] == "softmax" and best["dataset"] == "digits"
    assert len(trial_dirs(experiment)) == 2
    # The study ran on the "head's disk" and was saved into the experiment, where a plain run keeps it.
    saved = yaml.safe_load((experiment / "experiment.yaml").read_text())["optuna_storage"]
    assert saved == f"sqlite:///{tmp_path / 'head-disk' / 'limit.db'}"
    assert [t.state.name for t in study_trials(experiment, experiment.name)] == ["COMPLETE", "COMPLETE"]
    assert not (tmp_path / "head-disk" / "limit.db").exists()
    assert own_processes(ray_tmp) == [], "the script left processes running"


def test_a_search_without_name_is_refused_before_any_ray_starts(tmp_path, ray_tmp):
    log = tmp_path / "job.log"
    status = run_script(standin_env(tmp_path, ray_tmp, "4301", ["n0"]), TINY, log)
    assert status == 2
    assert "give --name" in log.read_text()
    assert not (tmp_path / "steps-4301").exists()


# ---- a real single-node SLURM ----------------------------------------------------------------------------------

SLURM_TOOLS = ("slurmctld", "slurmd", "munged", "sbatch", "sinfo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm(tmp_path) -> Iterator[dict[str, str]]:
    """A single-node SLURM (this machine, all its CPUs) of this test only; yields the environment that
    points sbatch at it."""
    missing = [t for t in SLURM_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"SLURM is not installed here ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm)")
    if os.geteuid() != 0:
        pytest.skip("a test SLURM needs root: slurmd starts jobs as their user")
    base = tmp_path / "slurm"
    for sub in ("munge", "state", "spool", "log"):
        (base / sub).mkdir(parents=True, mode=0o700)
    key = base / "munge" / "key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = base / "munge" / "sock"
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=osrtunetest", f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
        "SlurmUser=root", "SlurmdUser=root",
        f"StateSaveLocation={base / 'state'}", f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'ctld.pid'}", f"SlurmdPidFile={base / 'd.pid'}",
        f"SlurmctldLogFile={base / 'log' / 'ctld.log'}", f"SlurmdLogFile={base / 'log' / 'd.log'}",
        # No cgroups in a container: track a job's processes by parentage, confine nothing.
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "MpiDefault=none", "ReturnToService=2",
        "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
        "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
    ]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "RAY_"))} | {"SLURM_CONF": str(conf)}
    daemons = [
        subprocess.Popen(["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                          f"--log-file={base / 'munge' / 'log'}", f"--pid-file={base / 'munge' / 'pid'}",
                          f"--seed-file={base / 'munge' / 'seed'}"], env=env),
    ]
    try:
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.1)
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-f", str(conf)], env=env))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env))
        state = ""
        for _ in range(60):
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        if state != "idle":
            logs = "\n".join(p.read_text()[-1500:] for p in (base / "log").iterdir())
            pytest.fail(f"the test SLURM did not come up (node state {state!r}):\n{logs}")
        yield env
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
        for daemon in reversed(daemons):
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()


@pytest.mark.ray
def test_a_slurm_job_signalled_as_at_its_time_limit_is_resumed_by_the_next_which_finishes_the_search(
        tmp_path, ray_tmp, slurm):
    """Two real sbatch jobs: the first starts Ray and the search and stops cleanly at SIGUSR1; the second
    resumes it and finishes (one test, not a third job for a search finished in one go: each job costs
    a Ray start and a driver, about 40 s here)."""
    storage = tmp_path / "results"
    experiment = storage / "limit"
    env = slurm | {"OSRTUNE_SKIP_SETUP": "1", "OSRTUNE_RAY_TMPDIR": str(ray_tmp / "job"),
                   "OSRTUNE_STUDY_DIR": str(tmp_path / "head-disk")}
    submit = ["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=1", "--gpus-per-node=0", str(SCRIPT)]
    args = ["--method", "softmax", "--dataset", "digits", "--num-samples", "2", "--max-epochs", "40", "--splits", "0",
            "--scheduler", "fifo", "--checkpoint-every", "5", "--storage-path", str(storage), "--name", "limit"]
    first = tmp_path / "first.out"
    job = subprocess.run([*submit[:2], f"--output={first}", *submit[2:], *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while not (experiment.exists() and any(results_so_far(t) for t in trial_dirs(experiment))):
        assert time.monotonic() < deadline, first.read_text()[-3000:] if first.exists() else "no job output"
        time.sleep(0.5)
    # What `#SBATCH --signal=B:USR1@300` does five minutes before the time limit.
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, check=True)
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline + 120, first.read_text()[-3000:]
        time.sleep(1)
    out = first.read_text()
    assert "all 1 node(s) joined Ray" in out, out[-3000:]
    assert "stopped by SIGUSR1" in out, out[-3000:]
    assert not (experiment / "best.yaml").exists()
    assert (experiment / "optuna.db").exists()

    second = tmp_path / "second.out"
    done = subprocess.run([*submit[:2], "--wait", f"--output={second}", *submit[2:], "--resume", "--name", "limit",
                           "--storage-path", str(storage)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    out = second.read_text() if second.exists() else ""
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{out[-3000:]}"
    assert yaml.safe_load((experiment / "best.yaml").read_text())["method"] == "softmax"
    assert [t.state.name for t in study_trials(experiment, "limit")] == ["COMPLETE", "COMPLETE"]
    assert own_processes(ray_tmp) == [], "the jobs left processes running"
