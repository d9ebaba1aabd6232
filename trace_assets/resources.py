"""Dagster resources: the GPU, the generation service built on it, and where data lives."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from trace_assets.devices import claim_devices
from trace_assets.experiment import ModelConfig
from trace_assets.generation.backends import Backend, OpenAIBackend, TransformersBackend, VllmBackend
from trace_assets.generation.cached import CachedGeneration, generate_many_with_cache, generate_with_cache
from trace_assets.generation.types import ModelSpec, Request, Sampling
from trace_assets.models import offline_environment, resolve_model

# GenerationResource's backends with sleep_engines, by engine configuration: they outlive the resource
# (one Dagster run) so that the next run in this process wakes their engines; interpreter exit stops them
_SLEEPING_BACKENDS: dict[str, VllmBackend] = {}


@functools.cache
def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # a broken CUDA install means: no GPU
        return 0


def _id_list(text: str) -> list[str]:
    """ "0, 2,3" -> ["0", "2", "3"]."""
    return [d.strip() for d in text.split(",") if d.strip()]


def _visible_ids() -> list[str]:
    return _id_list(os.environ.get("CUDA_VISIBLE_DEVICES", ""))


# a compile cache's environment variable -> its folder under GPUResource.compile_cache
COMPILE_CACHES = {"VLLM_CACHE_ROOT": "vllm", "TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


def _named_by_user(variable: str, value: str | None) -> bool:
    """Whether a compile-cache variable of this process's environment was set by its user. Inductor writes
    its own default (/tmp/torchinductor_<user>) into os.environ the first time it looks for its cache, which
    any in-process import of transformers' models does: that value is torch's, not a choice."""
    if value is None:
        return False
    if variable == "TORCHINDUCTOR_CACHE_DIR" and "torch._inductor.runtime.cache_dir_utils" in sys.modules:
        return value != sys.modules["torch._inductor.runtime.cache_dir_utils"].default_cache_dir()
    return True


class GPUResource(dg.ConfigurableResource):
    """The accelerators a step may use. On a machine without CUDA everything runs on the CPU.

    ``devices`` is a CUDA_VISIBLE_DEVICES string ("" = all visible). ``memory_fraction`` is the
    share of GPU memory vLLM may reserve; ``cpu_memory_fraction`` is the share of RAM vLLM-CPU
    reserves for its KV cache. ``compile_cache`` is where vLLM's and torch's compile caches live
    (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) unless the environment names them:
    the data folder by default, so the next step, a second run, or a step on another machine over the
    same storage starts warm (an SFT run's first compile was 232 s cold on an H100).
    """

    devices: str = ""
    memory_fraction: float = 0.85
    cpu_memory_fraction: float = 0.3
    compile_cache: str = ""
    # Machine-wide on purpose: cards are shared by every run and experiment on the machine.
    lock_dir: str = "/tmp/trace_assets-gpu-locks"

    def has_cuda(self) -> bool:
        return cuda_device_count() > 0

    def device_ids(self) -> list[str]:
        """Physical ids: ``devices``, else the cards this process was given, else every card."""
        return _id_list(self.devices) or _visible_ids() or [str(i) for i in range(cuda_device_count())]

    def claim(self, count: int, log: Callable[[str], None] = print, poll_s: float = 2.0, prefer: list[str] | None = None):
        """Hold ``count`` cards no other step on this machine holds (see :func:`claim_devices`), ``prefer``'s
        first; yields [] where there is no GPU."""
        ids = self.device_ids() if self.has_cuda() or self.devices else []
        return claim_devices(ids, count, Path(self.lock_dir), log, poll_s, prefer)

    def torch_device(self, cards: list[str] | None = None) -> str:
        """ "cpu", "cuda", or "cuda:i" for a claimed card in this process (i: its place among the
        cards this process sees)."""
        if not self.has_cuda():
            return "cpu"
        if not cards:
            return "cuda"
        visible = _visible_ids()
        return f"cuda:{visible.index(cards[0]) if visible else int(cards[0])}"

    def resolve_dtype(self, dtype: str) -> str:
        if dtype != "auto":
            return dtype
        return "bfloat16" if self.has_cuda() else "float32"

    def vllm_memory_utilization(self) -> float:
        return self.memory_fraction if self.has_cuda() else self.cpu_memory_fraction

    def environment(self, devices: list[str] | None = None) -> dict[str, str]:
        """The environment of a GPU subprocess; ``devices`` (from :meth:`claim`) become its visible cards."""
        env = offline_environment()
        if self.compile_cache:
            for variable, folder in COMPILE_CACHES.items():
                if not _named_by_user(variable, env.get(variable)):
                    env[variable] = str(Path(self.compile_cache) / folder)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        elif self.devices:
            env["CUDA_VISIBLE_DEVICES"] = self.devices
        if not self.has_cuda() and (os.cpu_count() or 1) > 1:
            # vLLM-CPU reserves a core for its scheduler by default; on a 2-core machine binding the
            # model's threads to every core measured 82 vs 65 output tokens/s (bench/generation.py).
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
        return env


class DataResource(dg.ConfigurableResource):
    """The data folder: the DuckDB file, models and checkpoints."""

    data_dir: str

    @property
    def path(self) -> Path:
        return Path(self.data_dir)

    @property
    def database(self) -> Path:
        return self.path / "trace_assets.duckdb"

    @property
    def models_dir(self) -> Path:
        return self.path / "models"


class GenerationResource(dg.ConfigurableResource):
    """Turns an experiment's model section into a started backend.

    Its vLLM engines live as long as the resource does (one run in process, one step's process
    under the multiprocess executor): :meth:`generate` and :meth:`generate_many` hand a call to
    the running engine when its engine key matches (the judge after the teacher of the same model,
    the next style's traces, checkpoints of the student's architecture) and start another otherwise;
    ``teardown_after_execution`` stops it (see docs/operations.md, "Engine lifetime").

    With ``sleep_engines`` (``gpu.sleep_engines``; CUDA only) the engines outlive the run in this
    process: teardown puts them to sleep (their cards given back, as does a training step's claim
    mid-run), and the next run in the process (the study's next stage, run in process) wakes them
    rather than starting its own. One process-wide backend per engine configuration holds them.
    """

    gpu: GPUResource
    data: DataResource
    chunk_size: int = 1024
    enforce_eager: str = "auto"  # "auto": eager on CPU, where torch.compile costs minutes and gains little
    sleep_engines: bool = False
    _kept: VllmBackend | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A step that may start engines starts by removing the shared memory that engines of killed
        runs left in /dev/shm (only segments no live process uses: trace_assets/shm.py)."""
        from trace_assets.shm import remove_orphaned_segments

        removed = remove_orphaned_segments()
        if removed and context.log is not None:
            context.log.info(f"removed {len(removed)} orphaned shared-memory segment(s) of killed runs: {', '.join(removed)}")

    def settings(self, config: ModelConfig, **sampling_overrides) -> tuple[ModelSpec, Sampling]:
        """The one conversion from an experiment's model section to what a backend needs: the model
        resolved to a loadable path and dtype on this machine, and the sampling parameters."""
        path = config.model if config.backend == "openai" else resolve_model(config.model, self.data.models_dir)
        engine = {f.name for f in fields(ModelSpec)} - {"name", "path", "dtype"}
        spec = ModelSpec(
            name=config.model, path=path, dtype=self.gpu.resolve_dtype(config.dtype), **config.model_dump(include=engine)
        )
        return spec, Sampling.of(config.sampling, **sampling_overrides)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._kept is not None and self._kept.sleep_when_idle:
            took = self._kept.sleep()
            if took is not None and context.log is not None:
                asleep = self._kept.asleep()
                what = "asleep for the next run in this process" if asleep else "stopped (they did not go to sleep)"
                context.log.info(f"vLLM: engine(s) {what} ({took:.1f} s)")
            return
        self.close()

    def close(self) -> None:
        """Stop the vLLM engines kept between calls (each waits for its engine to stop) and give their cards back."""
        if self._kept is not None:
            self._kept.close()

    def backend(self, spec: ModelSpec, keep_engines: bool = True) -> Backend:
        """``spec``'s backend. vLLM: with ``keep_engines`` the resource's own, whose engines serve
        later calls too; without, one whose every call starts and stops its engines (the benchmarks
        of a fresh engine ask for that)."""
        if spec.backend == "openai":
            return OpenAIBackend()
        if spec.backend == "transformers":
            return TransformersBackend(device=self.gpu.torch_device())
        if not keep_engines:
            return self._vllm_backend(keep_engines=False)
        if self._kept is None:
            self._kept = self._vllm_backend(keep_engines=True)
        return self._kept

    def _vllm_backend(self, keep_engines: bool) -> VllmBackend:
        eager = {"auto": not self.gpu.has_cuda(), "true": True, "false": False}[self.enforce_eager]
        sleep = keep_engines and self.sleep_engines and self.gpu.has_cuda()  # vLLM's sleep mode needs CUDA
        settings = {
            "gpu_memory_utilization": self.gpu.vllm_memory_utilization(),
            "enforce_eager": eager,
            "chunk_size": self.chunk_size,
            "env": self.gpu.environment(),
            "cpu_kv_cache": not self.gpu.has_cuda(),
        }
        if not sleep:
            return VllmBackend(**settings, claim=self.gpu.claim, keep_engines=keep_engines)
        # the process's backend for these settings and cards, whose sleeping engines a later run wakes
        # keyed by configuration, not by the environment (an in-process import may change os.environ between runs)
        key = self.gpu.model_dump_json() + repr((eager, self.chunk_size))
        if key not in _SLEEPING_BACKENDS:
            for other in _SLEEPING_BACKENDS.values():  # one configuration's engines asleep in a process at a time
                other.close()
            _SLEEPING_BACKENDS.clear()
            _SLEEPING_BACKENDS[key] = VllmBackend(**settings, claim=self.gpu.claim, keep_engines=True, sleep_when_idle=True)
        return _SLEEPING_BACKENDS[key]

    def generate(
        self, spec: ModelSpec, sampling: Sampling, requests: list[Request], log: Callable[[str], None] = print
    ) -> CachedGeneration:
        """``spec``'s backend, through the generation cache in the data folder's database (vLLM: the
        running engine where it can serve ``spec``)."""
        return generate_with_cache(self.data.database, self.backend(spec), spec, sampling, requests, log)

    def generate_many(
        self, jobs: list[tuple[ModelSpec, Sampling, list[Request]]], log: Callable[[str], None] = print
    ) -> list[CachedGeneration]:
        """Several models through the cache, one result per job in order. vLLM starts one engine per
        architecture and loads each further checkpoint's weights into it; other backends take the
        models one after the other."""
        results: list[CachedGeneration | None] = [None] * len(jobs)
        by_backend: dict[str, list[int]] = {}
        for index, (spec, _, _) in enumerate(jobs):
            by_backend.setdefault(spec.backend, []).append(index)
        for indices in by_backend.values():
            backend = self.backend(jobs[indices[0]][0])
            for index, result in zip(
                indices, generate_many_with_cache(self.data.database, backend, [jobs[i] for i in indices], log)
            ):
                results[index] = result
        return results  # type: ignore[return-value]
