"""The generation cache carried between device sessions (bench/gpu_study.py): ``export`` writes it as
Parquet parts, ``run --cache-from`` loads them into a fresh data folder, and generation then serves
those requests from the cache without calling the backend."""

from __future__ import annotations

import random
import string

import duckdb
import pytest

from bench.gpu_study import CACHE_FOLDER, export, load_cache
from trace_assets.errors import InputError
from trace_assets.experiment import database_path
from trace_assets.generation.backends import Backend
from trace_assets.generation.cache_store import store_completions
from trace_assets.generation.cached import generate_with_cache, request_key
from trace_assets.generation.types import Completion, ModelSpec, Request, Sampling

MODEL = "sha256:0123abcd"  # request keys name the model by its weights' hash
SAMPLING = Sampling(temperature=0.8, max_tokens=32, n=2)
PART_BYTES = 10_000  # a few rows a part


class FailingBackend(Backend):
    """A backend that must not be asked: every request should come from the cache."""

    def generate(self, spec, sampling, requests, on_batch, log=print):
        raise AssertionError(f"the backend was asked for {len(requests)} requests")


def requests(count: int) -> list[Request]:
    chats = [[{"role": "user", "content": f"What is {i} + {i}? Think step by step."}] for i in range(count)]
    return [Request(request_key(chat, MODEL, SAMPLING), chat) for chat in chats]


def cache_rows(database) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as db:
        return db.execute("SELECT * FROM generation_cache ORDER BY request_hash, sample_index").fetchall()


@pytest.fixture
def exported(tmp_path):
    """A data folder whose cache holds 2 samples of 6 requests (with per-token log-probabilities, and
    one without; texts that barely compress), exported with parts small enough that there are several."""
    source = tmp_path / "source"
    noise = random.Random(0)
    completions = [
        Completion(
            r.key,
            i,
            f"{n} + {n} = {2 * n}. " + "".join(noise.choices(string.ascii_letters, k=1500)),
            "stop",
            20 + n,
            9,
            token_logprobs=[-0.5, -0.25 * i],
            token_ends=[3, 7],
        )
        for n, r in enumerate(requests(6))
        for i in range(SAMPLING.n)
    ]
    completions[-1].token_logprobs = completions[-1].token_ends = None
    store_completions(database_path(source), MODEL, completions)
    export(source, tmp_path / "out", cache_part_bytes=PART_BYTES)
    return source, tmp_path / "out" / CACHE_FOLDER


def test_cache_exported_and_loaded_into_a_fresh_data_folder(tmp_path, exported):
    source, parts = exported
    files = sorted(parts.glob("part-*.parquet"))
    assert len(files) >= 2 and all(path.stat().st_size <= PART_BYTES for path in files)
    fresh = tmp_path / "fresh"  # a new session's machine: no database yet

    assert load_cache(fresh, [parts]) == (12, 0)
    assert cache_rows(database_path(fresh)) == cache_rows(database_path(source))  # every column, created_at too
    assert load_cache(fresh, [parts.parent]) == (0, 12)  # the export's OUT folder also names them; nothing added
    assert len(cache_rows(database_path(fresh))) == 12

    result = generate_with_cache(database_path(fresh), FailingBackend(), ModelSpec(MODEL, "/nowhere"), SAMPLING, requests(6))
    assert (result.generated, result.reused) == (0, 12)
    first = result.completions[(requests(1)[0].key, 1)]
    assert first.text.startswith("0 + 0 = 0.") and first.token_logprobs == [-0.5, -0.25] and first.token_ends == [3, 7]


def test_loading_keeps_rows_already_there(tmp_path, exported):
    _, parts = exported
    fresh = tmp_path / "fresh"
    mine = requests(1)[0]
    store_completions(database_path(fresh), MODEL, [Completion(mine.key, 0, "kept", "length", 1, 1)])

    assert load_cache(fresh, [parts]) == (11, 1)
    with duckdb.connect(str(database_path(fresh)), read_only=True) as db:
        kept = db.execute("SELECT text FROM generation_cache WHERE request_hash = ? AND sample_index = 0", [mine.key]).fetchall()
    assert kept == [("kept",)]


def test_malformed_parts_are_named(tmp_path, exported):
    import polars as pl

    _, parts = exported
    with pytest.raises(InputError, match="absent: no such folder"):
        load_cache(tmp_path / "fresh", [tmp_path / "absent"])
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(InputError, match=r"bad: no part-NNN\.parquet files in it or in its generation_cache/"):
        load_cache(tmp_path / "fresh", [bad])
    (bad / "part-000.parquet").write_text("not parquet")
    with pytest.raises(InputError, match=r"bad/part-000\.parquet: not a Parquet file"):
        load_cache(tmp_path / "fresh", [parts, bad])
    assert not database_path(tmp_path / "fresh").exists()  # every file is read before any row is added
    pl.read_parquet(sorted(parts.glob("*.parquet"))[0]).drop("token_logprobs").write_parquet(bad / "part-000.parquet")
    with pytest.raises(InputError, match=r"part-000\.parquet: no column token_logprobs"):
        load_cache(tmp_path / "fresh", [bad])
    pl.read_parquet(sorted(parts.glob("*.parquet"))[0]).with_columns(text=None).write_parquet(bad / "part-000.parquet")
    with pytest.raises(InputError, match=r"part-000\.parquet: its rows do not fit .*NOT NULL.*text"):
        load_cache(tmp_path / "fresh", [bad])
