"""Run untrusted Python (a model's MBPP solution and its test asserts) in a separate, limited process.

Each run gets:

- a fresh process: ``python -I -S`` (no environment variables, user site or site-packages), in its
  own session so the whole process group can be killed;
- limits set before it starts (``resource.setrlimit``): address space (``memory_mb``), CPU seconds,
  size of any file it writes, open files, no core dumps; and a wall-clock limit after which the
  process group is killed;
- a fresh scratch directory as its working directory, removed afterwards; its output goes to files
  outside it, capped by the file-size limit;
- no network: it runs in a new user + network namespace (``unshare -rn``, which needs no privileges
  where the kernel allows unprivileged user namespaces; :func:`network_isolation` says which), and in
  any case an audit hook (``sys.addaudithook``) installed before the code runs refuses sockets;
- the same audit hook refuses reading files outside the scratch directory and the standard library,
  writing outside the scratch directory, listing other directories, starting processes (``fork``,
  ``exec``, ``subprocess``, ``os.system``), loading native code (``ctypes``) and signalling other
  processes.

An audit hook is not a security boundary against code written to escape it (CPython's audit hooks
are meant for monitoring); the namespace and the resource limits are what hold regardless. For
hostile code at scale, run the study's evaluation in a container or VM as well.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RESULT_MARK = "SANDBOX-RESULT "

# The child's first code: reads the pass token from stdin, installs the audit hook, then runs the
# solution and the tests in one namespace. Its result is one line on stderr, ending with the token.
_BOOTSTRAP = r"""
import json, os, sys
token = sys.stdin.readline().strip()
sys.stdin.close()
sys.dont_write_bytecode = True
scratch = os.path.realpath(os.getcwd())
readable = tuple(os.path.realpath(p) for p in json.loads(sys.argv[1]))
program = json.loads(open("program.json").read())
blocked_events = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.kill", "os.killpg", "signal.pthread_kill",
    "os.chroot", "os.setuid", "os.putenv", "os.unsetenv", "sys.addaudithook",
}
blocked_imports = {"ctypes", "_ctypes", "_posixsubprocess", "cffi", "_socket", "socket"}
writes = [0]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def inside(path, roots):
    return any(path == root or path.startswith(root + os.sep) for root in roots)

def refuse(what):
    raise PermissionError("sandbox: " + what)

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int) or path is None:
            return
        real = os.path.realpath(os.fsdecode(path))
        writing = bool((flags or 0) & WRITE_FLAGS) or any(c in (mode or "") for c in "wax+")
        if writing:
            if not inside(real, (scratch,)):
                refuse("writing " + real)
            writes[0] += 1
            if writes[0] > 64:
                refuse("more than 64 files opened for writing")
        elif not inside(real, (scratch,) + readable):
            refuse("reading " + real)
    elif event in ("os.listdir", "os.scandir"):
        path = args[0] if args and args[0] is not None else "."
        if isinstance(path, int) or not inside(os.path.realpath(os.fsdecode(path)), (scratch,)):
            refuse("listing " + str(path))
    elif event in ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.symlink", "os.link", "shutil.rmtree"):
        for path in args:
            if isinstance(path, (str, bytes)) and not inside(os.path.realpath(os.fsdecode(path)), (scratch,)):
                refuse(event + " " + os.fsdecode(path))
    elif event == "import" and args and args[0].split(".")[0] in blocked_imports:
        refuse("importing " + args[0])
    elif event in blocked_events:
        refuse(event)

def report(status, detail=""):
    sys.stdout.flush()
    sys.stderr.write("\nSANDBOX-RESULT " + json.dumps({"status": status, "detail": str(detail)[:300]}) + " " + token + "\n")
    sys.stderr.flush()
    os._exit(0)

sys.addaudithook(hook)
namespace = {"__name__": "__main__", "__builtins__": __builtins__}
stage = "solution"
try:
    exec(compile(program["code"], "solution.py", "exec"), namespace)
    stage = "setup"
    if program["setup"]:
        exec(compile(program["setup"], "setup.py", "exec"), namespace)
    for number, test in enumerate(program["tests"]):
        stage = "test %d" % number
        try:
            exec(compile(test, "test_%d.py" % number, "exec"), namespace)
        except AssertionError:
            report("test_failed", test)
except SyntaxError as error:
    report("syntax_error", "%s line %s: %s" % (stage, error.lineno, error.msg))
except MemoryError:
    report("memory_limit", stage)
except PermissionError as error:
    if str(error).startswith("sandbox: "):
        report("forbidden_operation", str(error)[9:])
    report("runtime_error", "%s: PermissionError: %s" % (stage, error))
except RecursionError:
    report("runtime_error", stage + ": RecursionError")
except SystemExit as error:
    report("exited_early", "%s: exit(%s)" % (stage, error.code))
except BaseException as error:
    report("runtime_error", "%s: %s: %s" % (stage, type(error).__name__, str(error)[:200]))
report("passed")
"""

STATUSES = (
    "passed",
    "test_failed",
    "syntax_error",
    "runtime_error",
    "timeout",
    "memory_limit",
    "output_limit",
    "forbidden_operation",
    "exited_early",
    "killed",
)


@dataclass(frozen=True)
class SandboxResult:
    status: str  # one of STATUSES
    detail: str
    wall_s: float
    returncode: int | None
    network_isolation: str  # "namespace" or "audit_hook"

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_isolation() -> str:
    """``namespace`` when ``unshare -rn`` can start a process here (no privileges needed where the
    kernel allows unprivileged user namespaces), else ``audit_hook`` (sockets refused in Python only)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "audit_hook"
    try:
        probe = subprocess.run([unshare, "-rn", "--", sys.executable, "-I", "-S", "-c", "pass"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "audit_hook"
    return "namespace" if probe.returncode == 0 else "audit_hook"


def _readable_roots() -> list[str]:
    """The standard library (imports read it); nothing else outside the scratch directory."""
    paths = sysconfig.get_paths()
    return sorted({paths["stdlib"], paths["platstdlib"]})


def _limits(memory_mb: int, cpu_s: int, file_mb: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def run_tests(
    code: str,
    tests: list[str],
    setup: str = "",
    *,
    timeout_s: float = 10.0,
    cpu_s: int = 5,
    memory_mb: int = 512,
    file_mb: int = 1,
) -> SandboxResult:
    """Run ``code``, then ``setup``, then each test assert, in one sandboxed process (see the module doc)."""
    started = time.perf_counter()
    isolation = network_isolation()
    scratch = Path(tempfile.mkdtemp(prefix="trace_assets_sandbox_"))
    logs = Path(tempfile.mkdtemp(prefix="trace_assets_sandbox_logs_"))
    token = secrets.token_hex(16)
    process = None
    try:
        (scratch / "program.json").write_text(json.dumps({"code": code, "setup": setup, "tests": tests}))
        command = [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, json.dumps(_readable_roots())]
        if isolation == "namespace":
            command = [shutil.which("unshare") or "unshare", "-rn", "--", *command]
        with (logs / "stdout").open("wb") as stdout, (logs / "stderr").open("wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=scratch,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True,
                preexec_fn=_limits(memory_mb, cpu_s, file_mb),
                close_fds=True,
            )
            assert process.stdin is not None
            try:
                process.stdin.write((token + "\n").encode())
                process.stdin.close()
            except BrokenPipeError:
                pass
            try:
                returncode = process.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
            _kill_group(process)  # whatever it left behind goes too
            if timed_out:
                returncode = process.wait()
        status, detail = _outcome(returncode, timed_out, (logs / "stderr").read_bytes()[-4096:], token)
        return SandboxResult(status, detail, time.perf_counter() - started, returncode, isolation)
    finally:
        if process is not None and process.poll() is None:
            _kill_group(process)
            process.wait()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)


def _outcome(returncode: int | None, timed_out: bool, stderr: bytes, token: str) -> tuple[str, str]:
    if timed_out:
        return "timeout", "wall-clock limit"
    text = stderr.decode("utf-8", "replace")
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARK) and line.endswith(" " + token):
            try:
                result = json.loads(line[len(RESULT_MARK) : -len(token) - 1])
                return result["status"], result["detail"]
            except (ValueError, KeyError, TypeError):
                break
    if returncode is not None and returncode < 0:
        signal_number = -returncode
        if signal_number in (signal.SIGXCPU, signal.SIGKILL):
            return "timeout", f"CPU limit (signal {signal_number})"
        if signal_number == signal.SIGXFSZ:
            return "output_limit", "wrote more than the file-size limit"
        return "killed", f"signal {signal_number}"
    if "MemoryError" in text:
        return "memory_limit", "out of memory"
    if "[Errno 27]" in text:  # EFBIG: a write past the file-size limit
        return "output_limit", "wrote more than the file-size limit"
    tail = text.strip().splitlines()[-1][:200] if text.strip() else ""
    return "exited_early", f"exit status {returncode} without a result {tail}".strip()
