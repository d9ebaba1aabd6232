"""Benchmark: our teacher_traces step vs a plain vLLM script on the same prompts, in one run.

    .venv/bin/python bench/generation.py [--experiment experiments/smoke.yaml]

1. Materialises problems, style_prompts and teacher_traces of the experiment into a fresh data
   folder (empty cache, so everything is generated) and times the teacher_traces run.
2. Runs bench/bare_vllm.py on exactly the same chat prompts, engine settings and sampling.
3. Prints output tokens/s of both, engine start-up of both, and the ratio. "Ours" is measured over
   the whole step minus engine start-up, so it includes our overhead (cache lookups, DuckDB writes,
   Dagster bookkeeping), not only the engine's generate call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiment", default="experiments/smoke.yaml")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import dagster as dg
    import duckdb
    import polars as pl

    from trace_assets.demo import run_stage
    from trace_assets.experiment import load_experiment
    from trace_assets.project import build_definitions, build_resources
    from trace_assets.styles.library import style_from_row
    from trace_assets.traces.build import teacher_requests

    experiment = load_experiment(ROOT / args.experiment)
    folder = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    defs = build_definitions(experiment, folder)
    # Build the offline model folder before timing: a one-off conversion, not part of generation.
    from trace_assets.models import resolve_model

    resolve_model(experiment.teacher.model, folder / "models")
    with dg.instance_for_test() as instance:
        run_stage(defs, instance, ["problems"])
        run_stage(defs, instance, ["style_prompts"])
        started = time.perf_counter()
        run_stage(defs, instance, ["teacher_traces"])
        step_wall = time.perf_counter() - started
        event = instance.get_latest_materialization_event(dg.AssetKey("teacher_traces"))
        metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}

    with duckdb.connect(str(folder / "trace_assets.duckdb"), read_only=True) as connection:
        traces = connection.sql("SELECT * FROM teacher_traces").pl()
        problems = connection.sql("SELECT * FROM problems").pl()
        style_rows = connection.sql("SELECT * FROM style_prompts").pl()
    ours_tokens = int(traces["n_tokens"].sum())
    ours_startup = float(metadata["engine_startup_s"])

    # The same prompts, rebuilt exactly as the step built them.
    config = experiment.teacher
    generation = build_resources(experiment, folder)["generation"]
    spec, sampling = generation.settings(config)
    styles = [style_from_row(row) for row in style_rows.iter_rows(named=True)]
    planned = teacher_requests(
        styles, problems.filter(pl.col("split") == "train"), config.model, sampling, experiment.paraphrase_styles()
    )
    prompts_path = folder / "prompts.json"
    prompts_path.write_text(json.dumps([request.messages for *_, request in planned]))

    backend = generation.backend(spec, keep_engines=False)
    command = [
        sys.executable,
        str(ROOT / "bench" / "bare_vllm.py"),
        str(prompts_path),
        spec.path,
        "--dtype",
        spec.dtype,
        "--max-tokens",
        str(sampling.max_tokens),
        "--temperature",
        str(sampling.temperature),
        "--top-p",
        str(sampling.top_p),
        "--n",
        str(sampling.n),
        "--gpu-memory-utilization",
        str(backend.gpu_memory_utilization),
    ] + (["--eager"] if backend.enforce_eager else [])
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=generation.gpu.environment())
    bare = json.loads([line for line in output.stdout.splitlines() if line.startswith('{"bare"')][-1])

    ours_rate = ours_tokens / (step_wall - ours_startup)
    engine_rate = float(metadata["output_tokens_per_s"])
    print(f"prompts: {len(planned)} x {sampling.n} samples, max_tokens {sampling.max_tokens}, dtype {spec.dtype}")
    print(f"ours  (teacher_traces step): {ours_tokens} output tokens, step {step_wall:.1f}s, engine start-up {ours_startup:.1f}s")
    print(f"      {ours_rate:.1f} output tokens/s over the step minus start-up ({engine_rate:.1f} inside the engine call)")
    print(f"bare  (plain vLLM script):   {bare['output_tokens']} output tokens, engine start-up {bare['startup_s']:.1f}s")
    print(f"      {bare['output_tokens_per_s']:.1f} output tokens/s")
    print(f"ratio ours/bare (tokens/s): {ours_rate / bare['output_tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
