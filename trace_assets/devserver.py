"""`make dev`: ``dagster dev`` that stops, every process of it, within seconds of SIGINT or SIGTERM.

A shell script that starts ``make dev &`` runs it with SIGINT ignored (a non-interactive shell does
that to its background jobs, and cannot undo it: signals ignored on entry can't be trapped). An
ignored signal survives ``exec`` and is inherited by children, and dagster dev stops its webserver,
daemon and code servers by making each send SIGINT to itself (``dagster_shared.ipc.send_interrupt``);
it also maps SIGTERM to whatever SIGINT does. So under ``make dev &`` a SIGTERM did nothing, or logged
the shutdown while the children stayed up.

This launcher resets SIGINT and SIGTERM to their defaults, starts dagster dev in a process group of
its own, and passes a stop signal (SIGINT, SIGTERM, SIGHUP) on to that whole group, as a terminal's
Ctrl-C reaches every process of the foreground group. Whatever of the group is still there
``GRACE_S`` seconds later (a code server busy importing on a loaded machine) is killed.

    python -m trace_assets.devserver [dagster dev options...]
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

GRACE_S = 6.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still counts as alive
        return True
    return True


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def supervise(command: Sequence[str], grace_s: float = GRACE_S) -> int:
    """Run COMMAND in a new process group with default stop signals; forward stop signals to the
    group, SIGKILL what is left of it GRACE_S seconds after the first one (or after COMMAND exits)
    and return COMMAND's exit status as a shell gives it (128 + N for a command killed by signal N)."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_DFL)  # inherited by the child, ignored or not here
    child = subprocess.Popen(list(command), process_group=0)
    deadline: list[float] = []

    def forward(signum: int, _frame: object) -> None:
        _kill_group(child.pid, signum)
        if not deadline:
            deadline.append(time.monotonic() + grace_s)

    for stop in STOP_SIGNALS:
        signal.signal(stop, forward)
    while child.poll() is None and not (deadline and time.monotonic() > deadline[0]):
        time.sleep(0.1)
    if not deadline:
        deadline.append(time.monotonic() + grace_s)  # the command ended by itself: its leftovers
    while _group_alive(child.pid) and time.monotonic() < deadline[0]:
        child.poll()  # reap the leader, so a zombie doesn't keep the group "alive"
        time.sleep(0.1)
    _kill_group(child.pid, signal.SIGKILL)
    returncode = child.wait()
    return returncode if returncode >= 0 else 128 - returncode


def main(argv: Sequence[str]) -> int:
    return supervise([sys.executable, "-m", "dagster", "dev", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
