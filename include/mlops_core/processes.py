"""Processes we start detached (model servers, training jobs): is one alive, who is in its group, stop it.

Each detached process leads its own process group (``start_new_session=True``), so stopping the
group stops everything it started. A pid read back from a state file may have been reused by an
unrelated process since; :func:`runs_with` checks the command line before anything is signalled.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live (not zombie) process; reaps it when it is our dead child."""
    if pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel below
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state not in ("Z", "X")
    return True


def command_line(pid: int) -> list[str] | None:
    """The arguments of ``pid`` (Linux procfs); ``None`` when they cannot be read (no procfs, gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def runs_with(pid: int, needles: Iterable[str]) -> bool:
    """Whether live ``pid`` has every one of ``needles`` among its arguments (guards against pid reuse).

    Without procfs (macOS) the arguments cannot be read and the pid is trusted.
    """
    if not pid_alive(pid):
        return False
    if not Path("/proc").is_dir():
        return True
    argv = command_line(pid)
    return argv is not None and all(n in argv for n in needles)


def process_group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (Linux procfs; elsewhere none are found)."""
    proc = Path("/proc")
    if not proc.exists():
        return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state ppid pgrp ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether any live process is still in process group ``pgid``."""
    return bool(process_group_members(pgid))


def terminate_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``pgid``, SIGKILL what is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not pid_alive(pgid) and not group_alive(pgid):
                return
            time.sleep(0.1)
