"""Device claims on one machine and data-parallel vLLM engines (process handling; no GPU needed)."""

import json
import threading
import time

import pytest

from trace_assets.generation.backends import GenerationError, VllmBackend
from trace_assets.generation.types import ModelSpec, Request, Sampling
from trace_assets.resources import GPUResource

SCRIPTED = ("-m", "trace_assets_tests.scripted_vllm_worker")


def _gpus(tmp_path, devices="0,1,2,3") -> GPUResource:
    return GPUResource(devices=devices, lock_dir=str(tmp_path / "locks"))


def test_concurrent_steps_get_disjoint_cards_and_wait_for_free_ones(tmp_path):
    gpu = _gpus(tmp_path, "0,1")
    with gpu.claim(1) as first, gpu.claim(1) as second:
        assert first == ["0"] and second == ["1"]
        waited = []

        def third_step():
            started = time.monotonic()
            with gpu.claim(1, poll_s=0.05) as third:
                waited.append((third, time.monotonic() - started))

        thread = threading.Thread(target=third_step)
        thread.start()
        time.sleep(0.5)
        assert not waited  # both cards are held: the third step waits
    thread.join(10)
    assert waited and waited[0][0] in (["0"], ["1"]) and waited[0][1] >= 0.4


def test_a_claim_is_all_or_nothing_and_bounded_by_the_machine(tmp_path):
    gpu = _gpus(tmp_path, "0,1,2")
    with pytest.raises(ValueError, match="needs 4 GPUs but this machine offers 3"), gpu.claim(4):
        pass
    with gpu.claim(1) as one, gpu.claim(2) as two:
        assert one == ["0"] and two == ["1", "2"]
    no_gpu = GPUResource(devices="", lock_dir=str(tmp_path))
    if not no_gpu.has_cuda():  # a CPU machine: steps claim nothing and run on the CPU
        with no_gpu.claim(1) as cards:
            assert cards == []


def _backend(gpu: GPUResource) -> VllmBackend:
    return VllmBackend(
        gpu_memory_utilization=0.5,
        enforce_eager=True,
        chunk_size=1,
        env={},
        per_request_seed=False,
        claim=gpu.claim,
        worker=SCRIPTED,
    )


def test_data_parallel_engines_split_the_prompts_over_their_own_cards(tmp_path):
    spec = ModelSpec(name="m", path="unused", tensor_parallel_size=2, data_parallel_size=2)
    requests = [Request(key, [{"role": "user", "content": key}]) for key in "abcde"]
    batches = []
    stats = _backend(_gpus(tmp_path)).generate(spec, Sampling(n=2), requests, batches.append, log=lambda _: None)
    completions = [c for batch in batches for c in batch]
    assert sorted((c.key, c.sample_index) for c in completions) == [(k, i) for k in "abcde" for i in range(2)]
    by_engine = {c.key: c.text.rsplit(" pid=", 1)[0] for c in completions}
    assert {by_engine[k] for k in "ace"} == {"gpus=0,1 model=m"} and {by_engine[k] for k in "bd"} == {"gpus=2,3 model=m"}
    assert stats.completions == 10 and stats.output_tokens == 20


def _checkpoint(folder, hidden_size: int) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": hidden_size,
                "_name_or_path": str(folder),
                "transformers_version": "5",
            }
        )
    )
    return str(folder)


def test_checkpoints_of_one_architecture_share_an_engine_per_data_parallel_rank(tmp_path):
    small, small2, small3 = (_checkpoint(tmp_path / name, 64) for name in ("small", "small2", "small3"))
    large = _checkpoint(tmp_path / "large", 128)

    def job(name, path, keys):
        requests = [Request(f"{name}-{k}", [{"role": "user", "content": k}]) for k in keys]
        return ModelSpec(name=name, path=path, data_parallel_size=2), Sampling(n=1), requests

    jobs = [
        job("s1", small, "abc"),
        job("l", large, "ab"),
        job("s2", small2, "xy"),
        job("s3", small3, ""),
        job("s1b", small, "d"),
    ]
    routed, logs = [], []
    stats = _backend(_gpus(tmp_path, "0,1")).generate_many(
        jobs, lambda index, batch: routed.append((index, batch)), log=logs.append
    )
    # every completion reaches its own job, from an engine on the cards of its data-parallel rank
    for index, batch in routed:
        name, _, requests = jobs[index]
        assert batch and all(c.key in {r.key for r in requests} and f"model={name.name}" in c.text for c in batch)
    assert sorted(c.key for _, batch in routed for c in batch) == sorted(r.key for _, _, rs in jobs for r in rs)
    # two architectures x two data-parallel engines; the checkpoint without requests is never loaded
    assert sum(s.extra.get("engine_starts", 0) for s in stats) == 4
    assert stats[3].completions == 0 and not any("small3" in line for line in logs)
    assert [s.completions for s in stats] == [3, 2, 2, 0, 1]
    # per engine: small's weights at start-up (its two jobs back to back), then small2's swapped in
    assert sum(f"weights of {small2}" in line for line in logs) == 2 and not any(f"weights of {small} " in line for line in logs)
    # the second architecture's engine says why it could not share the first one's
    assert [line for line in logs if "another engine" in line] == [
        f"vLLM: another engine: {large} (['LlamaForCausalLM']) can't share the engine started for {small}: config.json: hidden_size=128 vs 64"
    ]


def test_a_dying_engine_fails_the_step_and_keeps_the_other_engines_work(tmp_path):
    spec = ModelSpec(name="crash-after-one", path="unused", data_parallel_size=2)
    requests = [Request(key, [{"role": "user", "content": key}]) for key in "abcd"]
    saved = []
    with pytest.raises(GenerationError, match="engine 1 exited with code 3"):
        _backend(_gpus(tmp_path, "0,1")).generate(spec, Sampling(n=1), requests, saved.extend, log=lambda _: None)
    assert {c.key for c in saved} == {"a", "c", "b"}  # engine 0's two, engine 1's first before it died
    with _gpus(tmp_path, "0,1").claim(2) as cards:  # the failed step gave its cards back
        assert cards == ["0", "1"]


def test_a_claimed_card_maps_to_this_process_device_index(tmp_path, monkeypatch):
    import trace_assets.resources as resources

    monkeypatch.setattr(resources, "cuda_device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # this process sees physical cards 2 and 3 as cuda:0, cuda:1
    gpu = GPUResource(lock_dir=str(tmp_path))
    assert gpu.device_ids() == ["2", "3"]
    with gpu.claim(1) as first, gpu.claim(1) as second:
        assert (first, second) == (["2"], ["3"])
        assert gpu.torch_device(second) == "cuda:1" and gpu.torch_device(first) == "cuda:0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu.torch_device(["1"]) == "cuda:1" and gpu.torch_device([]) == "cuda"


def test_the_instance_sizes_the_gpu_pool_to_the_machine(tmp_path, monkeypatch):
    import yaml

    import trace_assets.instance as instance

    assert yaml.safe_load(instance.instance_yaml(8))["concurrency"]["pools"]["default_limit"] == 8
    assert yaml.safe_load(instance.instance_yaml(0))["concurrency"]["pools"]["default_limit"] == 1  # no GPU: one slot
    monkeypatch.setattr(instance, "gpu_count", lambda: 4)
    path = instance.write_instance(tmp_path / "home")
    assert yaml.safe_load(path.read_text())["concurrency"]["pools"]["default_limit"] == 4
    path.write_text("telemetry: {enabled: false}\n")
    instance.write_instance(tmp_path / "home", overwrite=False)  # the demo keeps a home's own settings
    assert "concurrency" not in yaml.safe_load(path.read_text())


def test_compile_caches_live_in_the_configured_folder_unless_the_environment_names_them(tmp_path, monkeypatch):
    from trace_assets.resources import COMPILE_CACHES

    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    env = GPUResource(compile_cache=str(tmp_path / "cache")).environment()
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "cache" / "vllm")
    assert env["TRITON_CACHE_DIR"] == str(tmp_path / "cache" / "triton")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else"  # the user's choice wins
    assert set(COMPILE_CACHES) <= set(env)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    assert "TRITON_CACHE_DIR" not in GPUResource().environment()  # no folder configured: the tools' defaults
