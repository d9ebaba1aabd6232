"""Secrets: the OpenAI-compatible backend's API key comes from the environment, is sent to the
server, and appears in no log line, no asset metadata, no Dagster event and no DuckDB row.

A local HTTP server stands in for the API (/v1/chat/completions and /v1/completions) and records
the Authorization header of every request; teacher and judge both use it through the project's
own path (build_definitions -> GenerationResource -> generate_with_cache -> OpenAIBackend). A second
server rejects the key and echoes it in its error body, as hosted APIs do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import duckdb

from trace_assets.demo import run_stage
from trace_assets.experiment import PROJECT_ROOT
from trace_assets.generation.backends import OpenAIBackend
from trace_assets.generation.cached import generate_with_cache, request_key
from trace_assets.generation.types import ModelSpec, Request, Sampling
from trace_assets.inputs import load_checked_experiment
from trace_assets.project import build_definitions

KEY_ENV = "TRACE_ASSETS_TEST_API_KEY"


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers chat and text completions; a judge request (response_format) gets a JSON verdict."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        authorization = self.headers.get("Authorization")
        self.server.seen.append((self.path, authorization))
        if self.server.reject:
            key = (authorization or "").removeprefix("Bearer ")
            return self._reply(401, {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}})
        n = body.get("n", 1)
        if self.path.endswith("/chat/completions"):
            if "response_format" in body:
                text = json.dumps({"conforms": True, "failed_criteria": [], "reason": "fine"})
            else:
                text = "Ava has 3 apples.\n3 + 4 = 7\n#### 7"
            choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} for i in range(n)]
        elif self.path.endswith("/completions"):
            choices = [{"index": i, "text": " 3 + 4 = 7\n#### 7", "finish_reason": "stop"} for i in range(n)]
        else:
            return self._reply(404, {"error": {"message": f"no route {self.path}"}})
        self._reply(
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "choices": choices,
                "usage": {"prompt_tokens": 11, "completion_tokens": 5 * n, "total_tokens": 11 + 5 * n},
            },
        )

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # the server is not what is under test; keep its lines out of the logs
        pass


@contextlib.contextmanager
def fake_openai(reject: bool = False):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    server.seen, server.reject = [], reject
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", server.seen
    finally:
        server.shutdown()
        server.server_close()


def write_experiment(folder: Path, base_url: str) -> Path:
    model = f"{{model: served-model, backend: openai, base_url: '{base_url}', api_key_env: {KEY_ENV}, max_concurrency: 2"
    path = folder / "experiment.yaml"
    path.write_text(f"""
name: secrets
problems: {{source: synthetic, n_train: 3, n_test: 2, synthetic: {{min_steps: 1, max_steps: 2}}}}
styles_dir: {PROJECT_ROOT / "styles"}
styles: [normal, diamond]
teacher: {model}, sampling: {{max_tokens: 32, n: 2}}}}
judge: {model}, sampling: {{temperature: 0.0, max_tokens: 32}}}}
students: {{s: {{model: local:smollm2-135m-instruct}}}}
datasets: {{G_normal: {{recipe: G, style: normal}}, H: {{recipe: H}}}}
evaluation: {{few_shot_k: 2}}
""")
    return path


def duckdb_text(path: Path) -> str:
    """Every row of every table and view, as text."""
    with duckdb.connect(str(path), read_only=True) as db:
        tables = [row[0] for row in db.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        assert "generation_cache" in tables and "teacher_traces" in tables and "judged_traces" in tables
        return "\n".join(f"{table}: {db.execute(f'SELECT * FROM {table}').fetchall()!r}" for table in tables)


def files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_the_api_key_is_sent_but_never_logged_or_stored(tmp_path, monkeypatch, caplog, capfd):
    key = "sk-test-" + secrets.token_hex(20)
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)  # every library's debug lines too (httpx, httpcore, dagster)
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    with fake_openai() as (base_url, seen):
        defs = build_definitions(load_checked_experiment(write_experiment(tmp_path, base_url)), data)
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            for stage in (["problems"], ["style_prompts"], ["teacher_traces"], ["judged_traces"]):
                run_stage(defs, instance, stage)
            events = [entry for record in instance.get_run_records() for entry in instance.all_logs(record.dagster_run.run_id)]
            runs = [record.dagster_run for record in instance.get_run_records()]
    # The key went where it should: every request carried it.
    assert len(seen) >= 2 * 3 * 2 and {auth for _, auth in seen} == {f"Bearer {key}"}
    materializations = [e for e in events if e.dagster_event and e.dagster_event.is_step_materialization]
    assert {m.dagster_event.asset_key.to_user_string() for m in materializations} >= {"teacher_traces", "judged_traces"}
    # ...and nowhere else: log lines (Python logging and the process's stdout/stderr), events and
    # their metadata, run records, DuckDB rows, and every file the instance and the data folder hold.
    out, err = capfd.readouterr()
    assert caplog.records and key not in caplog.text and key not in out + err
    assert all(key not in repr(entry) for entry in events)
    assert all(key not in repr(run) for run in runs)
    assert key not in duckdb_text(data / "trace_assets.duckdb")
    assert files_containing(home, key.encode()) == [] and files_containing(data, key.encode()) == []
    assert files_containing(home, b"teacher_traces")  # (the search does see the instance's storage)


def test_a_rejected_key_echoed_by_the_server_is_not_logged_or_cached(tmp_path, monkeypatch, caplog, capfd):
    key = "sk-test-" + secrets.token_hex(20)
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)
    database = tmp_path / "trace_assets.duckdb"
    sampling = Sampling(max_tokens=8)
    with fake_openai(reject=True) as (base_url, seen):
        spec = ModelSpec(name="served-model", path="served-model", backend="openai", base_url=base_url, api_key_env=KEY_ENV)
        messages = [{"role": "user", "content": "2 + 2?"}]
        requests = [Request(request_key(messages, spec.name, sampling), messages)]
        logged: list[str] = []
        result = generate_with_cache(database, OpenAIBackend(max_retries=0), spec, sampling, requests, logged.append)
    assert seen and seen[0][1] == f"Bearer {key}"
    assert result.failed == 1 and result.completions == {}
    out, err = capfd.readouterr()
    assert all(key not in line for line in logged) and key not in caplog.text and key not in out + err
    if database.exists():  # errors are never cached (with nothing to store, the file is not even created)
        with duckdb.connect(str(database), read_only=True) as db:
            assert db.execute("SELECT count(*) FROM generation_cache").fetchone()[0] == 0
    assert files_containing(tmp_path, key.encode()) == []
