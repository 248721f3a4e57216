"""One run per experiment: the lock file ``artifacts/<experiment>/.lock``.

A run takes the lock before its first stage and holds it to its end; a second run of the same
experiment is refused at once with the holder's PID, host, start time and command. The lock names a
*holder* process: ``./run.sh`` takes it for its own shell (``python -m nextdest lock``, holder = the
shell's PID, exported as ``NEXTDEST_LOCK_HOLDER``), so a second ``./run.sh`` is refused even while
the first is between two stage processes; each stage process then finds the lock held by its own
holder and goes on. A stage script run on its own (or :func:`nextdest.stages.run_pipeline`) holds
it for its own PID.

A lock whose holder is gone (no such process on this host, or the PID now belongs to a process
started later) is stale: the next run takes it over and says so. Checking and writing the lock
happen under an ``flock`` on ``.lock.guard``, so two runs starting together cannot both win.
Experiments have separate folders, hence separate locks: runs of different experiments proceed
side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from datetime import datetime
from pathlib import Path

LOCK_NAME = ".lock"
HOLDER_ENV = "NEXTDEST_LOCK_HOLDER"


class LockError(RuntimeError):
    """The experiment is in use by another run (the message names it)."""


def holder_pid() -> int:
    """The process the lock is held for: ``$NEXTDEST_LOCK_HOLDER`` (set by run.sh) or this one."""
    env = os.environ.get(HOLDER_ENV, "").strip()
    return int(env) if env.isdigit() else os.getpid()


def proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux /proc), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def proc_command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return " ".join(sys.argv) if pid == os.getpid() else "?"
    return " ".join(p.decode(errors="replace") for p in raw.split(b"\0") if p) or "?"


def is_alive(info: dict) -> bool:
    """Whether the holder recorded in a lock still runs (a lock of another host counts as alive)."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists (another user's)
    start = proc_start(pid)
    return not (info.get("pid_start") and start and start != info["pid_start"])  # PID reused


def describe(info: dict) -> str:
    return (f"PID {info.get('pid')} on {info.get('host')}, started {info.get('started')} "
            f"(command: {info.get('command')})")


@contextlib.contextmanager
def _guard(exp: Path):
    exp.mkdir(parents=True, exist_ok=True)
    with open(exp / f"{LOCK_NAME}.guard", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_lock(exp: Path) -> dict | None:
    try:
        info = json.loads((exp / LOCK_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as stale
    return info if isinstance(info, dict) else {}


def acquire(exp: Path, holder: int | None = None, log=print) -> bool:
    """Take the lock of experiment folder ``exp`` for ``holder`` (default :func:`holder_pid`).

    Returns True when this call took it (the caller releases it), False when ``holder`` already held
    it (an outer caller releases it). Raises :class:`LockError` when another live run holds it."""
    holder = holder or holder_pid()
    path = exp / LOCK_NAME
    with _guard(exp):
        held = read_lock(exp)
        if held is not None:
            if held.get("pid") == holder and held.get("host") == socket.gethostname():
                return False
            if held and is_alive(held):
                raise LockError(
                    f"experiment '{exp.name}' is in use by another run: {describe(held)}; wait for it to "
                    f"finish or stop it (lock file {path})"
                )
            what = describe(held) if held else "an unreadable lock file"
            log(f"[lock] took over the stale lock of experiment '{exp.name}': {what} is no longer running")
        info = {
            "pid": holder,
            "pid_start": proc_start(holder),
            "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": proc_command(holder),
        }
        tmp = exp / f"{LOCK_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, path)
    return True


def release(exp: Path, holder: int | None = None) -> bool:
    """Remove the lock if ``holder`` holds it. Returns whether it did."""
    holder = holder or holder_pid()
    if not exp.exists():
        return False
    with _guard(exp):
        held = read_lock(exp)
        if held and held.get("pid") == holder and held.get("host") == socket.gethostname():
            (exp / LOCK_NAME).unlink(missing_ok=True)
            return True
    return False


@contextlib.contextmanager
def experiment_lock(exp: Path, log=print):
    """Hold the lock of ``exp`` for the block (re-entrant for the same holder)."""
    holder = holder_pid()
    took = acquire(exp, holder, log)
    try:
        yield
    finally:
        if took:
            release(exp, holder)
