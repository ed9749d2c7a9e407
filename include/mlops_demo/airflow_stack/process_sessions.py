"""Find and stop every process of a group of sessions (the stack's components and what they forked).

Each Airflow component is started as the leader of its own session. Its descendants stay in that
session even when they move to a process group of their own (task processes do), so "every live
process whose session id is one of the leaders' pids, plus their descendants" is the whole stack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

import psutil


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid``; a group that is gone (or not ours) is ignored."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def is_running(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) is not running."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def session_processes(leaders: set[int]) -> set[int]:
    """Live processes in the sessions led by ``leaders``, plus their descendants (never this process)."""
    found: set[int] = set()
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        pid = int(proc.info["pid"])
        if pid == me:
            continue
        try:
            if os.getsid(pid) in leaders and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(pid)
        except (OSError, psutil.Error):
            continue
    for leader in leaders:
        try:
            for child in psutil.Process(leader).children(recursive=True):
                if child.pid != me and is_running(child.pid):
                    found.add(child.pid)
        except psutil.Error:
            continue
        if is_running(leader):
            found.add(leader)
    return found


def kill_sessions(leaders: set[int], grace: float, extra: Iterable[int] = ()) -> set[int]:
    """SIGTERM, then after ``grace`` seconds SIGKILL, every live process of the given sessions.

    Returns the pids that had to be SIGKILLed.

    ``extra`` are further pids to stop (processes seen in the sessions earlier that may have left).
    The SIGKILLs go to the descendants first: a component blocked waiting for its children (the
    scheduler's LocalExecutor joins its workers) then gets a moment to reap them and exit by itself,
    instead of leaving them as zombies for an init process that may not reap (as in some VMs).
    """
    killed: set[int] = set()
    targets = session_processes(leaders) | {p for p in extra if is_running(p)}
    if not targets:
        return killed
    send_signal(targets, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        targets = {p for p in targets if is_running(p)}
        if not targets:
            return killed
        time.sleep(0.1)
    targets = {p for p in targets | session_processes(leaders) if is_running(p)}
    send_signal(targets - leaders, signal.SIGKILL)
    killed |= targets - leaders
    end = time.monotonic() + 3
    while time.monotonic() < end and any(is_running(p) for p in leaders):
        time.sleep(0.1)
    for _ in range(50):
        targets = {p for p in targets | session_processes(leaders) if is_running(p)}
        if not targets:
            return killed
        send_signal(targets, signal.SIGKILL)
        killed |= targets
        time.sleep(0.1)
    return killed


def send_signal(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each pid; pids that are gone (or not ours) are skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
