"""One running engine across calls: the vLLM backend keeps its worker for the next call of the
same engine key (process handling with a scripted worker; no engine, no GPU needed)."""

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from trace_assets.generation import backends
from trace_assets.generation.backends import GenerationError, VllmBackend
from trace_assets.generation.cached import request_key
from trace_assets.generation.types import ModelSpec, Request, Sampling
from trace_assets.metadata import step_figures
from trace_assets.resources import DataResource, GenerationResource, GPUResource

SCRIPTED = ("-m", "trace_assets_tests.scripted_vllm_worker")
QUIET = lambda message: None  # noqa: E731


@pytest.fixture
def workers(tmp_path, monkeypatch):
    """Reads the scripted workers' log: [("start" | "exit", pid), ...] in order."""
    log = tmp_path / "workers.log"
    monkeypatch.setenv("SCRIPTED_WORKER_LOG", str(log))

    def events() -> list[tuple[str, int]]:
        lines = log.read_text().split() if log.exists() else []
        return [
            ("exit", int(line)) if index and lines[index - 1] == "exit" else ("start", int(line))
            for index, line in enumerate(lines)
            if line != "exit"
        ]

    return events


def _model(folder, hidden_size=64) -> str:
    """A checkpoint folder with just a config: enough for engine keys and KV-cache sizing."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": hidden_size, "num_attention_heads": 4, "num_hidden_layers": 2}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _backend(keep: bool, gpu: GPUResource | None = None, sleep: bool = False) -> VllmBackend:
    return VllmBackend(
        sleep_when_idle=sleep,
        gpu_memory_utilization=0.5,
        enforce_eager=True,
        chunk_size=2,
        env=dict(os.environ),
        per_request_seed=False,
        claim=gpu.claim if gpu else backends._no_claim,
        worker=SCRIPTED,
        keep_engines=keep,
    )


def _requests(keys: str) -> list[Request]:
    return [Request(key, [{"role": "user", "content": key}]) for key in keys]


def _call(backend, spec, keys, logs=None):
    """(completions by (key, sample) with their text, pid of the worker that wrote them, stats)."""
    batches = []
    stats = backend.generate(
        spec, Sampling(n=2), _requests(keys), batches.append, log=(logs.append if logs is not None else QUIET)
    )
    texts = {(c.key, c.sample_index): c.text.rsplit(" pid=", 1)[0] for batch in batches for c in batch}
    pids = {int(c.text.rsplit("pid=", 1)[1]) for batch in batches for c in batch}
    return texts, pids, stats


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie has exited too
        return handle.read().split(")")[-1].split()[0] != "Z"


def test_calls_of_one_engine_key_share_one_worker_and_get_what_fresh_workers_give(tmp_path, workers):
    spec = ModelSpec(name="teacher", path=_model(tmp_path / "m"))
    judge = ModelSpec(name="judge", path=spec.path)  # the same model and settings under another role
    kept, logs = _backend(keep=True), []
    first, first_pids, first_stats = _call(kept, spec, "abc", logs)
    second, second_pids, second_stats = _call(kept, judge, "de", logs)
    third, third_pids, _ = _call(kept, spec, "f", logs)
    assert len(first_pids | second_pids | third_pids) == 1 and [kind for kind, _ in workers()] == ["start"]
    assert first_stats.extra == {"engine_starts": 1} and first_stats.startup_s > 0
    assert second_stats.extra == {"engine_reuses": 1} and second_stats.startup_s == 0
    (reusing,) = [line for line in logs if "reusing" in line][:1]
    assert reusing.startswith("vLLM: reusing the running engine(s) for judge (2 prompts") and "1 call(s) served" in reusing
    (pid,) = first_pids
    assert _alive(pid)  # idle between calls, ready for the next
    # each call got its own requests' completions only, the same a worker per call gives
    fresh = _backend(keep=False)
    assert (
        first == _call(fresh, spec, "abc")[0] and second == _call(fresh, judge, "de")[0] and third == _call(fresh, spec, "f")[0]
    )
    assert set(second) == {(k, i) for k in "de" for i in range(2)}
    kept.close()
    assert not _alive(pid)
    assert [kind for kind, _ in workers()].count("start") == 4  # the per-call backend started one per call
    assert ("exit", pid) in workers()  # the kept worker ended because its input ended


def test_another_engine_key_stops_the_running_worker_before_starting_its_own(tmp_path, workers):
    small, large = ModelSpec(name="s", path=_model(tmp_path / "s")), ModelSpec(name="l", path=_model(tmp_path / "l", 128))
    kept, logs = _backend(keep=True), []
    _, (first,), _ = _call(kept, small, "ab", logs)
    _, (second,), stats = _call(kept, large, "ab", logs)
    _, (third,), _ = _call(kept, small, "ab", logs)
    assert len({first, second, third}) == 3 and stats.extra == {"engine_starts": 1}
    # each worker ended before the next one started: one engine's memory at a time
    assert workers()[:4] == [("start", first), ("exit", first), ("start", second), ("exit", second)]
    assert (
        f"vLLM: stopping the engine(s) for s ({large.path} (['LlamaForCausalLM']) can't share the engine started for {small.path}: config.json: hidden_size=128 vs 64) before starting l's"
        in logs
    )
    kept.close()


def test_a_worker_dying_mid_job_fails_the_call_and_the_next_call_starts_afresh(tmp_path, workers):
    path = _model(tmp_path / "m")
    kept = _backend(keep=True)
    _, (healthy,), _ = _call(kept, ModelSpec(name="m", path=path), "a")
    saved = []
    with pytest.raises(GenerationError, match=r"engine 0 exited with code 3\) after 2 completions"):
        kept.generate(ModelSpec(name="crash-after-one", path=path), Sampling(n=2), _requests("bc"), saved.extend, log=QUIET)
    assert {c.key for c in saved} == {"b"}  # what came before it died reached the caller
    texts, (fresh,), stats = _call(kept, ModelSpec(name="m", path=path), "cd")
    assert fresh != healthy and stats.extra == {"engine_starts": 1} and set(texts) == {(k, i) for k in "cd" for i in range(2)}
    # an idle worker that died between calls is replaced too
    os.kill(fresh, 9)
    while _alive(fresh):
        time.sleep(0.01)
    logs = []
    _, (replacement,), stats = _call(kept, ModelSpec(name="m", path=path), "e", logs)
    assert replacement != fresh and stats.extra == {"engine_starts": 1}
    assert any("(it has stopped)" in line for line in logs)
    kept.close()


def _card_taken_elsewhere(lock_dir, card: str) -> bool:
    """Whether another process finds ``card``'s lock held."""
    probe = f"import fcntl,os,sys; h=os.open({str(lock_dir / f'gpu{card}.lock')!r}, os.O_RDWR); fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0


def test_an_idle_worker_keeps_its_card_from_other_processes_but_yields_it_to_its_own(tmp_path, workers):
    gpu = GPUResource(devices="0", lock_dir=str(tmp_path / "locks"))
    kept = _backend(keep=True, gpu=gpu)
    texts, (pid,), _ = _call(kept, ModelSpec(name="m", path=_model(tmp_path / "m")), "ab")
    assert {text for text in texts.values()} == {"gpus=0 model=m"}
    assert _alive(pid) and _card_taken_elsewhere(tmp_path / "locks", "0")  # no other step starts an engine there
    started = time.monotonic()
    with gpu.claim(1, poll_s=30) as cards:  # a training step of the same run: the idle engine makes way at once
        assert cards == ["0"] and time.monotonic() - started < 10 and not _alive(pid)
    assert not _card_taken_elsewhere(tmp_path / "locks", "0")
    _, (again,), stats = _call(kept, ModelSpec(name="m", path=_model(tmp_path / "m")), "c")
    assert again != pid and stats.extra == {"engine_starts": 1}
    kept.close()
    assert not _card_taken_elsewhere(tmp_path / "locks", "0")


def test_a_worker_outlives_no_caller_that_dies_without_teardown(tmp_path, workers):
    script = f"""
import os, signal
from trace_assets.generation.backends import VllmBackend
from trace_assets.generation.types import ModelSpec, Request, Sampling
backend = VllmBackend(0.5, True, 2, dict(os.environ), per_request_seed=False, worker={SCRIPTED!r}, keep_engines=True)
backend.generate(ModelSpec(name="m", path="unused"), Sampling(n=1), [Request("a", [])], lambda batch: None, log=lambda m: None)
os.kill(os.getpid(), signal.SIGKILL)
"""
    subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=os.getcwd()), check=False)
    ((_, pid),) = workers()[:1]
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ("exit", pid) in workers()  # its input ended with its caller: it stopped its engine and left


def test_a_run_reuses_the_engine_across_steps_records_it_and_stops_it_at_teardown(tmp_path, workers, monkeypatch):
    monkeypatch.setattr(backends, "WORKER", SCRIPTED)
    path = _model(tmp_path / "model")
    sampling = Sampling(n=1)

    def step(keys: str):
        @dg.asset(name=f"step_{keys}")
        def generating(generation: GenerationResource) -> dg.MaterializeResult:
            spec = ModelSpec(name="m", path=path)
            messages = [[{"role": "user", "content": key}] for key in keys]
            requests = [Request(request_key(m, "m", sampling), m) for m in messages]
            result = generation.generate(spec, sampling, requests, log=QUIET)
            return dg.MaterializeResult(metadata=result.metadata(len(result.completions)))

        return generating

    gpu = GPUResource(devices="", lock_dir=str(tmp_path / "locks"))
    resources = {"generation": GenerationResource(gpu=gpu, data=DataResource(data_dir=str(tmp_path)))}
    result = dg.materialize([step("ab"), step("cd")], resources=resources)
    assert result.success
    metadata = {name: result.asset_materializations_for_node(name)[0].metadata for name in ("step_ab", "step_cd")}
    assert {name: (m["engine_starts"].value, m["engine_reuses"].value, m["generated"].value) for name, m in metadata.items()} == {
        "step_ab": (1, 0, 2),
        "step_cd": (0, 1, 2),
    }
    ((_, pid), *rest) = workers()
    assert rest == [("exit", pid)]  # one worker for both steps, stopped when the run ended


def _sleeping(tmp_path, devices: str) -> tuple[GPUResource, VllmBackend, ModelSpec]:
    """A kept backend whose engines sleep, over ``devices`` (card locks in tmp_path), and a model for it."""
    gpu = GPUResource(devices=devices, lock_dir=str(tmp_path / "locks"))
    return gpu, _backend(keep=True, gpu=gpu, sleep=True), ModelSpec(name="m", path=_model(tmp_path / "m"))


def test_a_sleeping_engine_gives_its_card_to_a_claim_and_wakes_on_it_for_the_next_call(tmp_path, workers):
    gpu, kept, spec = _sleeping(tmp_path, "0")
    logs: list[str] = []
    _, (pid,), _ = _call(kept, spec, "ab")
    with gpu.claim(1, poll_s=30) as cards:  # the run's training step: the engine sleeps, its process lives on
        assert cards == ["0"] and _alive(pid)
    assert not _card_taken_elsewhere(tmp_path / "locks", "0")  # asleep, it holds no card
    texts, (again,), stats = _call(kept, spec, "cd", logs)
    assert again == pid and set(texts.values()) == {"gpus=0 model=m"}
    assert stats.extra == {"engine_wakes": 1, "wake_s": 0.002, "engine_reuses": 1} and stats.startup_s == 0
    assert "vLLM: waking the sleeping engine(s) for m on GPUs 0" in logs
    assert _card_taken_elsewhere(tmp_path / "locks", "0")  # awake, it holds its card again
    # sleeping twice (a claim, then a run's end) is one sleep; closing a sleeping engine stops it
    assert kept.sleep() is not None and kept.sleep() is None and _alive(pid)
    kept.close()
    assert not _alive(pid) and [kind for kind, _ in workers()] == ["start", "exit"]


def test_a_sleeping_engine_whose_card_is_taken_is_stopped_and_another_starts_on_the_free_card(tmp_path, workers):
    gpu, kept, spec = _sleeping(tmp_path, "0,1")
    logs: list[str] = []
    _, (pid,), _ = _call(kept, spec, "a")
    kept.sleep()
    with gpu.claim(1) as cards:  # another step now holds card 0: waking there would share it
        assert cards == ["0"]
        texts, (other,), stats = _call(kept, spec, "b", logs)
    assert other != pid and not _alive(pid) and set(texts.values()) == {"gpus=1 model=m"}
    assert stats.extra == {"engine_starts": 1} and any("another step holds its cards" in line for line in logs)
    kept.close()


def test_a_backend_without_sleep_stops_its_engine_for_a_claim_as_before(tmp_path, workers):
    gpu = GPUResource(devices="0", lock_dir=str(tmp_path / "locks"))
    kept = _backend(keep=True, gpu=gpu)
    _, (pid,), _ = _call(kept, ModelSpec(name="m", path=_model(tmp_path / "m")), "a")
    assert kept.sleep() is not None and not _alive(pid)  # sleep() falls back to stopping it
    kept.close()


def test_runs_in_one_process_with_sleep_engines_start_one_engine_and_wake_it(tmp_path, workers, monkeypatch):
    """The study's stages: one Dagster run each, in one process; a training step's claim between them."""
    monkeypatch.setattr(backends, "WORKER", SCRIPTED)
    monkeypatch.setattr(GPUResource, "has_cuda", lambda self: True)  # sleep mode is CUDA's
    monkeypatch.setattr("trace_assets.resources._SLEEPING_BACKENDS", {})
    path = _model(tmp_path / "model")
    sampling = Sampling(n=1)
    gpu = GPUResource(devices="0", lock_dir=str(tmp_path / "locks"))

    def generating_step(keys: str):
        @dg.asset(name=f"step_{keys}")
        def generating(generation: GenerationResource) -> dg.MaterializeResult:
            messages = [[{"role": "user", "content": key}] for key in keys]
            requests = [Request(request_key(m, "m", sampling), m) for m in messages]
            result = generation.generate(ModelSpec(name="m", path=path), sampling, requests, log=QUIET)
            return dg.MaterializeResult(metadata=result.metadata(len(result.completions)))

        return generating

    @dg.asset
    def training(context) -> None:
        with gpu.claim(1, poll_s=30) as cards:
            assert cards == ["0"]

    def run(asset) -> dict:
        resources = {"generation": GenerationResource(gpu=gpu, data=DataResource(data_dir=str(tmp_path)), sleep_engines=True)}
        result = dg.materialize([asset], resources=resources)
        assert result.success
        if asset is training:
            return {}
        metadata = result.asset_materializations_for_node(asset.key.path[-1])[0].metadata
        figures = {key: metadata[key].value for key in ("engine_starts", "engine_reuses", "engine_wakes", "generated")}
        # what bench/study_run.py records per step from the run's events: the counts and the seconds generating
        step = {**{k: v for k, v in figures.items() if k != "generated"}, "generate_s": metadata["generate_s"].value}
        assert step_figures(result.all_events) == {asset.key.path[-1]: step}
        assert (step["generate_s"] > 0) == (figures["generated"] > 0)  # the scripted worker's chunks take 0.01 s
        return figures

    assert run(generating_step("ab")) == {"engine_starts": 1, "engine_reuses": 0, "engine_wakes": 0, "generated": 2}
    ((_, pid),) = workers()
    assert _alive(pid) and not _card_taken_elsewhere(tmp_path / "locks", "0")  # asleep between runs
    run(training)
    assert run(generating_step("cd")) == {"engine_starts": 0, "engine_reuses": 1, "engine_wakes": 1, "generated": 2}
    assert workers() == [("start", pid)] and _alive(pid)
    from trace_assets.resources import _SLEEPING_BACKENDS

    for backend in _SLEEPING_BACKENDS.values():
        backend.close()
    assert workers() == [("start", pid), ("exit", pid)]


def test_a_sleeping_engine_wakes_on_its_own_card_though_a_lower_one_is_free(tmp_path, workers):
    gpu, kept, spec = _sleeping(tmp_path, "0,1")
    with gpu.claim(1) as cards:  # card 0 is taken when the engine starts: it gets card 1
        assert cards == ["0"]
        _, (pid,), _ = _call(kept, spec, "a")
    kept.sleep()
    texts, (again,), stats = _call(kept, spec, "b")  # card 0 is free now; the engine's own card 1 is preferred
    assert again == pid and set(texts.values()) == {"gpus=1 model=m"} and stats.extra.get("engine_wakes") == 1
    kept.close()


def test_a_sleeping_engine_that_died_is_replaced_by_a_fresh_one(tmp_path, workers):
    _, kept, spec = _sleeping(tmp_path, "0")
    logs: list[str] = []
    _, (pid,), _ = _call(kept, spec, "a")
    kept.sleep()
    os.kill(pid, 9)
    while _alive(pid):
        time.sleep(0.01)
    texts, (fresh,), stats = _call(kept, spec, "b", logs)
    assert fresh != pid and stats.extra == {"engine_starts": 1} and set(texts.values()) == {"gpus=0 model=m"}
    assert any("(it has stopped)" in line for line in logs)
    kept.close()


def test_the_sleeping_backend_of_a_configuration_survives_environment_changes_and_one_configuration_sleeps(tmp_path, monkeypatch):
    """The process's sleeping backend is keyed by configuration: an in-process import that sets a variable
    (inductor writes its cache folder into os.environ) must not start a second engine next to the sleeping one."""
    from trace_assets import resources

    monkeypatch.setattr(GPUResource, "has_cuda", lambda self: True)
    monkeypatch.setattr(resources, "_SLEEPING_BACKENDS", {})
    data = DataResource(data_dir=str(tmp_path))

    def resource(memory: float = 0.4) -> GenerationResource:
        gpu = GPUResource(
            devices="0", memory_fraction=memory, lock_dir=str(tmp_path / "locks"), compile_cache=str(tmp_path / "cc")
        )
        return GenerationResource(gpu=gpu, data=data, sleep_engines=True)

    spec = ModelSpec(name="m", path="unused")
    first = resource().backend(spec)
    monkeypatch.setenv("SOME_LIBRARY_DEFAULT", "set on import")
    assert resource().backend(spec) is first
    other = resource(0.6).backend(spec)  # another configuration: its own backend, and the first one's engines stopped
    assert other is not first and list(resources._SLEEPING_BACKENDS.values()) == [other]


def test_inductors_own_default_cache_folder_does_not_override_the_data_folders(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    gpu = GPUResource(compile_cache=str(tmp_path / "cc"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what inductor writes on first use
    assert gpu.environment()["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # a user's choice stands
    assert gpu.environment()["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_a_step_over_a_range_of_partitions_counts_its_engines_once():
    """A single-run backfill writes a materialization per partition, each with the step's own metadata."""
    partitions = dg.StaticPartitionsDefinition(["a", "b", "c"])

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run())
    def generating(context) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"engine_starts": 1, "engine_reuses": 0, "engine_wakes": 2})

    job = dg.Definitions(assets=[generating]).resolve_implicit_global_asset_job_def()
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    tags = {ASSET_PARTITION_RANGE_START_TAG: "a", ASSET_PARTITION_RANGE_END_TAG: "c"}
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, tags=tags)
    assert len([e for e in result.all_events if e.is_step_materialization]) == 3
    assert step_figures(result.all_events) == {"generating": {"engine_starts": 1, "engine_reuses": 0, "engine_wakes": 2}}
