"""Shared-memory segments that killed runs leave in ``/dev/shm``, and their removal.

vLLM's engine core and its workers talk through message queues in POSIX shared memory made with
Python's ``multiprocessing.shared_memory`` (``/dev/shm/psm_*``, 160 and 240 MB for one vLLM-CPU
engine; ``vllm/distributed/device_communicators/shm_broadcast.py``), and processes started by
multiprocessing's spawn share named semaphores (``/dev/shm/sem.mp-*``). An engine that shuts down
unlinks them, and a crashed process's ``resource_tracker`` unlinks what it registered. A run whose
whole process group is SIGKILLed (the fault soak, a stopped run, the OOM killer) loses the tracker
too, and its segments stay in RAM (``/dev/shm`` is tmpfs) until the machine restarts.

A segment is **orphaned** when its name is one of multiprocessing's (``psm_``, ``sem.mp-``), it is
owned by this user, has not changed for ``min_age_s`` seconds (not one being handed over this very
moment), and no process on this machine maps it or holds it open (``/proc/*/maps``, ``/proc/*/fd``,
matched by inode).
Such a segment can no longer be used: its creator and every process attached to it are gone.
Segments are created mode 0600, so only this user's processes (and root's) can attach; if one of
this user's processes can't be inspected (PID 1 aside), nothing is removed. This assumes
``/dev/shm`` is not shared with processes of another PID namespace (a container has a ``/dev/shm``
of its own by default).

``GenerationResource`` removes orphaned segments when a step that generates starts (its
``setup_for_execution``); ``bench/soak.py`` counts what is left at the end.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIXES = ("psm_", "sem.mp-")
MIN_AGE_S = 2.0


def _candidates(shm_dir: Path, prefixes: tuple[str, ...]) -> list[Path]:
    if not shm_dir.is_dir():
        return []
    return sorted(path for path in shm_dir.iterdir() if path.name.startswith(prefixes))


def _inodes_opened_by(pid_dir: Path, shm_dir: Path) -> set[int]:
    """Inodes of files under SHM_DIR that the process maps or has open. By inode, not name: a named
    semaphore's creator maps it under the temporary name glibc made it with (``sem.XXXXXX (deleted)``)."""
    prefix = f"{shm_dir}/"
    inodes = set()
    for line in (pid_dir / "maps").read_text().splitlines():
        fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
        if len(fields) == 6 and fields[5].startswith(prefix):
            inodes.add(int(fields[4]))
    for fd in (pid_dir / "fd").iterdir():
        with contextlib.suppress(OSError):  # closed since the listing
            if os.readlink(fd).startswith(prefix):
                inodes.add(fd.stat().st_ino)
    return inodes


def _by_inode(shm_dir: Path) -> dict[int, str]:
    names = {}
    for path in shm_dir.iterdir() if shm_dir.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            names[path.stat().st_ino] = path.name
    return names


def opened_by(pid: int, shm_dir: Path = SHM_DIR) -> set[str]:
    """Names under SHM_DIR that process PID maps or has open."""
    names = _by_inode(shm_dir)
    return {names[inode] for inode in _inodes_opened_by(Path(f"/proc/{pid}"), shm_dir) if inode in names}


def segments_in_use(shm_dir: Path = SHM_DIR, proc: Path = Path("/proc")) -> set[str] | None:
    """Names under SHM_DIR mapped or held open by a live process; None when a process of this user
    could not be inspected (then nobody can tell which segments are free)."""
    in_use: set[int] = set()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            in_use |= _inodes_opened_by(pid_dir, shm_dir)
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended while we looked
        except PermissionError:
            if pid_dir.name == "1":  # a sandbox's init may hide itself even from root; it attaches to nothing
                continue
            with contextlib.suppress(OSError):
                if pid_dir.stat().st_uid == os.geteuid():
                    return None
    return {name for inode, name in _by_inode(shm_dir).items() if inode in in_use}


def orphaned_segments(shm_dir: Path = SHM_DIR, min_age_s: float = MIN_AGE_S, prefixes: tuple[str, ...] = PREFIXES) -> list[Path]:
    """This user's multiprocessing segments that no live process maps or holds open (see the module)."""
    candidates = _candidates(shm_dir, prefixes)
    if not candidates:
        return []
    in_use = segments_in_use(shm_dir)
    if in_use is None:
        return []
    now, orphaned = time.time(), []
    for path in candidates:
        with contextlib.suppress(FileNotFoundError):
            info = path.stat()
            if info.st_uid == os.geteuid() and now - info.st_mtime >= min_age_s:
                orphaned.append(path)
    return [path for path in orphaned if path.name not in in_use]


def remove_orphaned_segments(shm_dir: Path = SHM_DIR, min_age_s: float = MIN_AGE_S) -> list[str]:
    """Unlink the orphaned segments; returns their names."""
    removed = []
    for path in orphaned_segments(shm_dir, min_age_s):
        with contextlib.suppress(FileNotFoundError):  # another step's cleanup got there first
            path.unlink()
            removed.append(path.name)
    return removed
