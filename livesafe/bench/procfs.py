"""CPU time and resident memory of a process and all its descendants, read from Linux's ``/proc``.

CPU is user + system time of every live process in the tree plus the time of children it has already
reaped (``cutime``/``cstime``), so a helper process that exits inside a measurement is still counted.
Without ``/proc`` (not Linux) :func:`sample` returns None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One reading of a process tree."""

    #: CPU seconds of the whole tree (live processes and the children they reaped).
    cpu_s: float
    #: CPU seconds of the root process alone (its threads; not its children).
    root_cpu_s: float
    #: Resident memory of the whole tree and of the root, in bytes.
    rss: int
    root_rss: int
    #: The root's peak resident memory so far (VmHWM), in bytes.
    root_peak_rss: int
    processes: int


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU s, reaped children's CPU s), or None if the process is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _status_kb(pid: int, *keys: str) -> dict[str, int]:
    out = dict.fromkeys(keys, 0)
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        if key in out:
            out[key] = int(value.split()[0])
    return out


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def sample(root: int) -> TreeSample | None:
    """The tree under ``root`` now; None without /proc or once ``root`` has gone."""
    if not PROC.is_dir() or (root_stat := _stat(root)) is None:
        return None
    cpu, rss, count = 0.0, 0, 0
    for pid in descendants(root):
        st = _stat(pid)
        if st is None:
            continue
        count += 1
        cpu += st[1] + st[2]
        rss += _status_kb(pid, "VmRSS")["VmRSS"] * 1024
    root_mem = _status_kb(root, "VmRSS", "VmHWM")
    return TreeSample(cpu_s=cpu, root_cpu_s=root_stat[1], rss=rss, root_rss=root_mem["VmRSS"] * 1024,
                      root_peak_rss=root_mem["VmHWM"] * 1024, processes=count)
