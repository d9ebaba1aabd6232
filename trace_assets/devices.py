"""Which cards a GPU step gets when several run at once on one machine (no Dagster imports, so
benchmarks on bare GPU machines use it too)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Releases of the cards that engines of this process hold between generation calls, while idle (each
# returns whether it released any). A claim that finds cards taken asks them first, so a step never
# waits on an idle engine of its own run, nor holds some cards while it waits for others.
_IDLE_HOLDERS: set[Callable[[], bool]] = set()


def hold_while_idle(release: Callable[[], bool]) -> None:
    """``release`` gives back cards this process holds but is not using; a claim may call it."""
    _IDLE_HOLDERS.add(release)


def busy_again(release: Callable[[], bool]) -> None:
    """The holder uses its cards again (or has none): claims leave it alone."""
    _IDLE_HOLDERS.discard(release)


def _release_idle_holders() -> bool:
    return any([release() for release in list(_IDLE_HOLDERS)])


@contextlib.contextmanager
def claim_devices(
    ids: list[str],
    count: int,
    lock_dir: Path,
    log: Callable[[str], None] = print,
    poll_s: float = 2.0,
    prefer: list[str] | None = None,
) -> Iterator[list[str]]:
    """Hold ``count`` of ``ids`` that no other process or step holds, waiting until they are free.

    The ``gpu`` pool bounds how many GPU steps run at once; this decides which cards each one gets,
    so two steps never share a card. Locks are ``flock``s on files in ``lock_dir``, all or nothing
    (two steps can't each hold half of what they need), and a step that dies gives its cards back
    with its process. Cards that an idle engine of this process keeps (:func:`hold_while_idle`) are
    taken back from it rather than waited for. With no ids (a CPU machine) it yields []. ``prefer``:
    cards tried first (a sleeping engine's own, to wake it where it is).
    """
    if not ids:
        yield []
        return
    if count > len(ids):
        raise ValueError(
            f"a step needs {count} GPUs but this machine offers {len(ids)} ({','.join(ids)}): "
            "lower tensor_parallel_size x data_parallel_size or training.processes"
        )
    lock_dir.mkdir(parents=True, exist_ok=True)
    order = [*(i for i in prefer or [] if i in ids), *(i for i in ids if i not in (prefer or []))]
    held: dict[str, int] = {}
    waited = 0.0
    try:
        while True:
            for device in order:
                if len(held) == count:
                    break
                handle = os.open(lock_dir / f"gpu{device}.lock", os.O_CREAT | os.O_RDWR, 0o666)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held[device] = handle
                except BlockingIOError:
                    os.close(handle)
            if len(held) == count:
                break
            for handle in held.values():
                os.close(handle)
            held.clear()
            if _release_idle_holders():  # an idle engine of this process held some: try again at once
                continue
            if waited % 60 == 0:
                log(f"waiting for {count} free GPU(s) of {','.join(ids)}")
            time.sleep(poll_s)
            waited += poll_s
        yield sorted(held, key=ids.index)
    finally:
        for handle in held.values():
            os.close(handle)
