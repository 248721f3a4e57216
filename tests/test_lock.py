"""One run per experiment: a live run's lock refuses a second run at once (naming it), a dead run's
lock is taken over, and different experiments run side by side."""

import json
import os
import socket
import subprocess
import sys

import pytest

from nextdest.config import ROOT, load_config
from nextdest.lock import LockError, acquire, read_lock, release
from nextdest.stages import experiment_dir, run_pipeline
from tiny import TINY, tiny_config


def hold(exp, pid: int, command: str = "./run.sh (the first run)") -> None:
    """Write the lock of ``exp`` as the run with PID ``pid`` would have."""
    exp.mkdir(parents=True, exist_ok=True)
    (exp / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                           "started": "2021-03-01T10:00:00+00:00", "command": command}))


@pytest.fixture
def other_process():
    """A live process that is not this one (stands for the first run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_of_an_experiment_is_refused_naming_the_first(artifacts, other_process):
    cfg = tiny_config()
    hold(experiment_dir(cfg), other_process.pid)
    with pytest.raises(LockError, match=rf"experiment 'base' is in use by another run: PID {other_process.pid} on "
                                        rf".*started 2021-03-01T10:00:00\+00:00 \(command: ./run.sh \(the first run\)\)"):
        run_pipeline(cfg, ["data"])
    assert not (experiment_dir(cfg) / "data").exists()


def test_stale_lock_is_taken_over_and_said(artifacts, capsys):
    cfg = tiny_config()
    pid = dead_pid()
    hold(experiment_dir(cfg), pid)
    run_pipeline(cfg, ["data"])
    out = capsys.readouterr().out
    assert f"[lock] took over the stale lock of experiment 'base': PID {pid} on" in out and "is no longer running" in out
    assert read_lock(experiment_dir(cfg)) is None  # released at the end


def test_other_experiments_run_side_by_side(artifacts, other_process, tmp_path):
    hold(experiment_dir(tiny_config()), other_process.pid)
    exp_file = tmp_path / "other.yaml"
    exp_file.write_text("cv:\n  train_folds: [0]\n")
    cfg = load_config(exp_file, TINY[:3])
    run_pipeline(cfg, ["data"])
    assert (artifacts / "other" / "data" / "manifest.json").exists()


def test_lock_is_reentrant_for_its_holder_and_released_by_it_only(tmp_path, other_process):
    exp = tmp_path / "exp"
    assert acquire(exp, holder=os.getpid()) is True
    assert acquire(exp, holder=os.getpid()) is False  # already ours: the outer caller releases
    assert release(exp, holder=other_process.pid) is False and read_lock(exp)["pid"] == os.getpid()
    with pytest.raises(LockError, match=f"PID {os.getpid()}"):
        acquire(exp, holder=other_process.pid)
    assert release(exp, holder=os.getpid()) is True and read_lock(exp) is None


@pytest.mark.slow
def test_run_sh_refuses_at_once_while_the_experiment_is_busy(artifacts, other_process):
    hold(artifacts / "base", other_process.pid)
    env = {**os.environ, "PYTHON": sys.executable, "NEXTDEST_ARTIFACTS": str(artifacts)}
    res = subprocess.run([str(ROOT / "run.sh"), "--only", "data", "data.preset=tiny"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert f"in use by another run: PID {other_process.pid}" in res.stderr and "Traceback" not in res.stderr
    assert "[data]" not in res.stdout  # no stage started
    assert read_lock(artifacts / "base")["pid"] == other_process.pid  # the first run's lock is untouched
