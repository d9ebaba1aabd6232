"""Shared memory left by killed runs: only segments no live process uses are removed (trace_assets/shm.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trace_assets.shm import PREFIXES, orphaned_segments, remove_orphaned_segments, segments_in_use

# Holds FILE mapped (argv[1]) and FILE open (argv[2]) until killed.
_HOLDER = """
import mmap, os, sys, time
mapped = open(sys.argv[1], "r+b")
view = mmap.mmap(mapped.fileno(), 0)
mapped.close()  # the mapping alone keeps it in use
held = os.open(sys.argv[2], os.O_RDONLY)  # an open descriptor alone too
print("ready", flush=True)
time.sleep(120)
"""

# Creates a multiprocessing shared-memory segment (registered with a resource tracker, as vLLM's are),
# prints its name and sleeps: killed with its process group, tracker included, it leaks the segment.
_CREATOR = """
import time
from multiprocessing import shared_memory
segment = shared_memory.SharedMemory(create=True, size=4096)
print(segment.name, flush=True)
time.sleep(120)
"""


def _segment(folder: Path, name: str, age_s: float = 3600) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * 4096)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_only_segments_no_live_process_maps_or_holds_open_are_orphaned(tmp_path):
    mapped, held, free = (_segment(tmp_path, f"psm_{name}") for name in ("mapped", "held", "free"))
    free_semaphore = _segment(tmp_path, "sem.mp-free")
    fresh = _segment(tmp_path, "psm_fresh", age_s=0)  # might be mid-creation: too young to judge
    _segment(tmp_path, "torch_1234_0")  # not multiprocessing's: never touched
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(mapped), str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        assert {"psm_mapped", "psm_held"} <= (segments_in_use(tmp_path) or set())
        assert orphaned_segments(tmp_path) == [free, free_semaphore]
        assert remove_orphaned_segments(tmp_path) == ["psm_free", "sem.mp-free"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["psm_fresh", "psm_held", "psm_mapped", "torch_1234_0"]
    finally:
        holder.kill()
        holder.wait()
    assert fresh.exists()
    # once its holder is gone, a segment is free to remove
    assert [p.name for p in orphaned_segments(tmp_path)] == ["psm_held", "psm_mapped"]


def test_a_live_named_semaphore_is_in_use_though_its_creator_maps_it_under_another_name():
    """glibc makes a named semaphore under a temporary name and links it into place, so its creator's
    mapping reads ``/dev/shm/sem.XXXXXX (deleted)``: only the inode says it is ``sem.mp-*``."""
    import multiprocessing

    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    lock = multiprocessing.get_context("spawn").Lock()  # spawn keeps the name, for children to open
    name = "sem." + lock._semlock.name.lstrip("/")
    assert (Path("/dev/shm") / name).exists()
    assert name in (segments_in_use() or set())
    assert name not in [p.name for p in orphaned_segments(min_age_s=0)]


def _age(path: Path, seconds: float = 60) -> None:
    """Make a segment look as old as one a killed run left (the cleanup leaves segments under MIN_AGE_S alone)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def _start_generation_hook(tmp_path, capsys) -> str:
    """What a step that generates does first: GenerationResource's setup; returns what it logged."""
    import dagster as dg

    from trace_assets.resources import DataResource, GenerationResource, GPUResource

    resource = GenerationResource(gpu=GPUResource(), data=DataResource(data_dir=str(tmp_path)))
    capsys.readouterr()
    resource.setup_for_execution(dg.build_init_resource_context())
    return capsys.readouterr().err  # the step's log


def test_a_killed_process_groups_shared_memory_is_removed_when_the_next_step_starts(tmp_path, capsys):
    """The real thing: multiprocessing.shared_memory in /dev/shm, its creator and resource tracker SIGKILLed."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    from multiprocessing import shared_memory

    ours = shared_memory.SharedMemory(create=True, size=4096)  # alive in this process: never removed
    _age(shm / ours.name.lstrip("/"))
    creator = subprocess.Popen([sys.executable, "-c", _CREATOR], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert creator.stdout is not None
        name = creator.stdout.readline().strip()
        assert name.startswith(PREFIXES[0]) and (shm / name).exists()
        assert name not in [p.name for p in orphaned_segments(min_age_s=0)]  # its creator still maps it
        os.killpg(creator.pid, signal.SIGKILL)  # the process and its resource tracker, as the soak kills runs
        creator.wait()
        time.sleep(0.5)
        assert (shm / name).exists(), "the kill should leave the segment behind (else this test shows nothing)"
        assert name not in [p.name for p in orphaned_segments()]  # too young to judge: left alone
        _age(shm / name)
        logged = _start_generation_hook(tmp_path, capsys)
        assert name in logged and ours.name.lstrip("/") not in logged
        assert not (shm / name).exists() and (shm / ours.name.lstrip("/")).exists()
    finally:
        if creator.poll() is None:
            os.killpg(creator.pid, signal.SIGKILL)
            creator.wait()
        ours.close()
        ours.unlink()


_GENERATE = """
import sys
from trace_assets.generation.backends import VllmBackend
from trace_assets.generation.types import ModelSpec, Request, Sampling
from trace_assets.models import offline_environment

backend = VllmBackend(gpu_memory_utilization=0.05, enforce_eager=True, chunk_size=1, env=offline_environment())
spec = ModelSpec(name="tiny", path=sys.argv[1], dtype="float32", max_model_len=512)
requests = [Request(f"r{i}", [{"role": "user", "content": f"Ava has {i} apples."}]) for i in range(400)]
backend.generate(spec, Sampling(temperature=0.8, max_tokens=200, n=2), requests, lambda batch: print("batch", flush=True))
"""


@pytest.mark.slow
def test_a_killed_vllm_engine_leaves_psm_segments_that_the_next_step_removes(tiny_model, tmp_path, capsys):
    """Where the segments come from: vLLM's engine core and worker (shm_broadcast message queues).
    SIGKILL to the generating process's group, as bench/soak.py kills runs, leaves them in /dev/shm."""
    import psutil

    from trace_assets.experiment import PROJECT_ROOT
    from trace_assets.shm import opened_by

    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    run = subprocess.Popen(
        [sys.executable, "-c", _GENERATE, tiny_model], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        assert run.stdout is not None
        for line in run.stdout:  # generating: the engine and its message queues are up
            if line == "batch\n":
                break
        else:
            pytest.fail(f"the generation ended before its first batch (exit {run.wait()})")
        engine = [psutil.Process(run.pid), *psutil.Process(run.pid).children(recursive=True)]
        names = {"VLLM::EngineCore", "VLLM::Worker"}
        assert names <= {p.name() for p in engine}
        segments = {n for p in engine for n in opened_by(p.pid) if n.startswith("psm_")}
        assert segments, "vLLM's engine maps no psm_ segment"
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        time.sleep(1)
        left = {n for n in segments if (shm / n).exists()}
        assert left == segments, "SIGKILL should leave the engine's segments behind"
        for name in left:
            _age(shm / name)
        logged = _start_generation_hook(tmp_path, capsys)
        assert all(name in logged for name in left)
        assert not any((shm / name).exists() for name in left)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
