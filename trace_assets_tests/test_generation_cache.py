"""The cache around generation, with a scripted backend standing in for the engine."""

import pytest

from trace_assets.generation.backends import Backend, GenerationError
from trace_assets.generation.cached import generate_many_with_cache, generate_with_cache, request_key
from trace_assets.generation.types import Completion, GenerationStats, ModelSpec, Request, Sampling


class ScriptedBackend(Backend):
    """Echoes prompts; can crash after a number of batches, like an engine dying mid-run."""

    def __init__(self, crash_after_batches=None, batch_size=2):
        self.calls = []
        self.crash_after_batches = crash_after_batches
        self.batch_size = batch_size

    def generate(self, spec, sampling, requests, on_batch, log=print):
        self.calls.append([r.key for r in requests])
        stats = GenerationStats()
        for index in range(0, len(requests), self.batch_size):
            if self.crash_after_batches is not None and index // self.batch_size >= self.crash_after_batches:
                raise GenerationError("engine died")
            batch = [
                Completion(r.key, i, f"echo {r.messages[-1]['content']} #{i}", "stop", 3, 4)
                for r in requests[index : index + self.batch_size]
                for i in range(sampling.n)
            ]
            on_batch(batch)
            stats.completions += len(batch)
        return stats


SPEC = ModelSpec(name="m", path="m")


def requests_for(questions, sampling):
    out = []
    for q in questions:
        messages = [{"role": "user", "content": q}]
        out.append(Request(request_key(messages, "m", sampling), messages))
    return out


def test_second_run_generates_nothing(tmp_path):
    db = tmp_path / "db.duckdb"
    sampling = Sampling(n=2)
    requests = requests_for(["a", "b", "c"], sampling)
    first = generate_with_cache(db, ScriptedBackend(), SPEC, sampling, requests, log=lambda m: None)
    assert (first.generated, first.reused) == (6, 0)
    backend = ScriptedBackend()
    second = generate_with_cache(db, backend, SPEC, sampling, requests, log=lambda m: None)
    assert (second.generated, second.reused) == (0, 6)
    assert backend.calls == []
    assert second.completions[(requests[1].key, 1)].text == "echo b #1"


def test_crash_keeps_finished_batches_and_rerun_generates_only_the_rest(tmp_path):
    db = tmp_path / "db.duckdb"
    sampling = Sampling(n=1)
    requests = requests_for(["a", "b", "c", "d", "e"], sampling)
    with pytest.raises(GenerationError):
        generate_with_cache(db, ScriptedBackend(crash_after_batches=1), SPEC, sampling, requests, log=lambda m: None)
    backend = ScriptedBackend()
    result = generate_with_cache(db, backend, SPEC, sampling, requests, log=lambda m: None)
    assert backend.calls == [[r.key for r in requests[2:]]]
    assert (result.generated, result.reused) == (3, 2)
    assert len(result.completions) == 5


def test_changed_sampling_or_prompt_is_a_new_generation(tmp_path):
    db = tmp_path / "db.duckdb"
    base = Sampling(n=1, temperature=0.7)
    generate_with_cache(db, ScriptedBackend(), SPEC, base, requests_for(["a", "b"], base), log=lambda m: None)
    hotter = Sampling(n=1, temperature=1.0)
    backend = ScriptedBackend()
    generate_with_cache(db, backend, SPEC, hotter, requests_for(["a"], hotter), log=lambda m: None)
    assert len(backend.calls[0]) == 1
    backend = ScriptedBackend()
    result = generate_with_cache(db, backend, SPEC, base, requests_for(["a", "b changed"], base), log=lambda m: None)
    assert len(backend.calls[0]) == 1 and result.reused == 1


def test_many_models_generate_only_what_is_missing_and_skip_fully_cached_ones(tmp_path):
    db = tmp_path / "db.duckdb"
    sampling = Sampling(n=1)
    first, second = ModelSpec(name="m1", path="m1"), ModelSpec(name="m2", path="m2")
    cached = requests_for(["a", "b"], sampling)
    generate_with_cache(db, ScriptedBackend(), first, sampling, cached, log=lambda m: None)
    partly = requests_for(["a", "c"], sampling)
    backend = ScriptedBackend()
    results = generate_many_with_cache(db, backend, [(first, sampling, cached), (second, sampling, partly)], log=lambda m: None)
    assert backend.calls == [[partly[1].key]]  # the fully cached model never reaches the backend
    assert [(r.generated, r.reused) for r in results] == [(0, 2), (1, 1)]
    assert results[1].completions[(partly[1].key, 0)].text == "echo c #0"
    again = ScriptedBackend()
    generate_many_with_cache(db, again, [(first, sampling, cached), (second, sampling, partly)], log=lambda m: None)
    assert again.calls == []


def test_a_batch_is_stored_whole_or_not_at_all(tmp_path):
    """A write that fails part-way (here a row the table refuses; in life a process killed mid-batch)
    leaves none of the batch behind, so a re-run regenerates the whole chunk, not half of it."""
    import duckdb

    from trace_assets.generation.cache_store import cached_completions, store_completions

    db = tmp_path / "db.duckdb"
    good = [Completion(f"k{i}", 0, f"text {i}", "stop", 3, 4) for i in range(3)]
    refused = Completion("k3", 0, None, "stop", 3, 4)  # text is NOT NULL
    with pytest.raises(duckdb.ConstraintException):
        store_completions(db, "m", [*good, refused])
    assert cached_completions(db, [c.key for c in good]) == {}
    assert store_completions(db, "m", good) == 3
    assert set(cached_completions(db, [c.key for c in good])) == {(c.key, 0) for c in good}


def test_each_request_gets_its_own_seed_from_the_experiments_seed_and_its_key():
    """One seed for every request would give every prompt the same random draws."""
    from trace_assets.generation.vllm_worker import request_seed

    seeds = {request_seed(0, f"key{i}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**31 for s in seeds)
    assert request_seed(0, "key1") == request_seed(0, "key1")  # a resumed run draws what the first one did
    assert request_seed(1, "key1") != request_seed(0, "key1")  # and the experiment's seed still matters


def test_greedy_requests_do_not_key_on_the_seed_but_sampled_ones_do():
    """Greedy decoding draws nothing at random: its seed is not part of the key (seed 0's key is
    what it always was); a sampled request's seed still is."""
    messages = [{"role": "user", "content": "q"}]
    greedy = {seed: request_key(messages, "m", Sampling(temperature=0.0, seed=seed)) for seed in (0, 1, 2)}
    sampled = {seed: request_key(messages, "m", Sampling(temperature=0.7, seed=seed)) for seed in (0, 1, 2)}
    assert len(set(greedy.values())) == 1 and len(set(sampled.values())) == 3
    assert greedy[0] == "3b8216da5e16d23bbf99"  # the key before greedy keys ignored the seed: old caches still serve it
    assert request_key(messages, "other model", Sampling(temperature=0.0, seed=1)) != greedy[0]


def test_a_request_several_jobs_share_is_generated_once_and_served_to_each(tmp_path):
    """The untrained model evaluated once per training seed: three jobs with the same greedy keys,
    beside a trained checkpoint (another model) with its own. The shared prompts reach the backend
    once; every job still gets every completion."""
    db = tmp_path / "db.duckdb"
    base, trained = ModelSpec(name="base", path="base"), ModelSpec(name="trained", path="trained")
    jobs = []
    for spec, seed in ((base, 0), (base, 1), (base, 2), (trained, 0)):
        sampling = Sampling(temperature=0.0, n=1, seed=seed)
        jobs.append(
            (
                spec,
                sampling,
                [
                    Request(request_key([{"role": "user", "content": q}], spec.name, sampling), [{"role": "user", "content": q}])
                    for q in ("a", "b")
                ],
            )
        )
    backend = ScriptedBackend()
    results = generate_many_with_cache(db, backend, jobs, log=lambda m: None)
    assert [len(call) for call in backend.calls] == [2, 2]  # base once, trained once
    assert [(r.generated, r.reused) for r in results] == [(2, 0), (0, 2), (0, 2), (2, 0)]
    for (_, _, requests), result in zip(jobs, results):
        assert [result.completions[(r.key, 0)].text for r in requests] == ["echo a #0", "echo b #0"]
