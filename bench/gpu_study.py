"""The first real study on one GPU (issue 24): run it, bring its tables back, and write its results.

    python bench/gpu_study.py run [--experiment experiments/gpu_study.yaml] [--data /tmp/gpu_study] [--stop-after-s S]
    python bench/gpu_study.py run --shrink --data /tmp/gpu_study_cpu                # the same file, CPU-sized
    python bench/gpu_study.py run --styles normal ...                              # only the arms of these styles
    python bench/gpu_study.py run --datasets H H_aa ...                            # only these arms
    python bench/gpu_study.py run --until checkpoints ...                          # stop once the students are trained
    python bench/gpu_study.py run --cache-from DIR [DIR...] ...                    # start from an earlier session's cache
    python bench/gpu_study.py export --data /tmp/gpu_study --out $OUT       # tables as one tar of Parquet files
    python bench/gpu_study.py results --tables DIR [DIR...] [--output bench/results/gpu_study]   # several: one study's exports merged

``run`` materializes the experiment stage by stage through Dagster (bench/study_run.py), resumable
over device calls; dry-run's per-step estimate is taken before the first stage. ``--shrink`` is the
rehearsal on a CPU: the same file (every arm, contrast, rule and style) at tiny sizes (see SHRINK).
``--styles`` keeps only those styles and the arms, contrasts and groups that need no other, ``--datasets``
only those arms: a study cut to what one device session's time allows, with the rest run later (it
says so in its name). ``export`` writes
the report's input tables (and the stage times) as Parquet into one tar that fits the device
tool's 16 MiB per file, and the generation cache (teacher traces, judge verdicts, answers: every
column) as Parquet parts under OUT/generation_cache/; ``run --cache-from`` loads such parts into a
fresh data folder before the first stage, so a later session (a fresh machine) does not generate
them again. ``results`` rebuilds the report from those tables with this checkout's
statistics (so the figures are the committed code's, not the device run's) and writes, under
``--output``: report.md with its plots, and results.json with per-arm accuracy and interval, the
planned contrasts, each arm's measured seed-to-seed SD, the loop's rounds, GPU seconds per step
and dry-run's estimate per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_EXPERIMENT = "experiments/gpu_study.yaml"
# the report's inputs (StudyTables) and the loop's (its style versions, answers and checkpoints); large text columns the report never reads
# are dropped so the tar stays under the device tool's 16 MiB per file
TABLES = (
    "problems",
    "accuracy",
    "eval_results",
    "failure_modes",
    "training_log",
    "trace_stats",
    "checkpoints",
    "sft_examples",
    "dataset_exclusions",
    "judged_traces",
    "round_styles",
    "round_evals",
    "round_checkpoints",
)
# the rehearsal's sizes: every arm still gets examples, and the run fits a 2-core CPU in minutes; the
# training seeds are the file's first two (SHRINK_SEEDS): two to measure a spread, and no more than the file has
SHRINK_SEEDS = 2
SHRINK = {
    "problems": {"n_train": 24, "n_test": 12},
    "teacher": {"sampling": {"n": 4, "max_tokens": 128}},
    "judge": {"sampling": {"max_tokens": 64}},
    "training": {"max_steps": 2, "batch_size": 4, "max_length": 512, "packing": False, "eval_fraction": 0.0},
    "evaluation": {"max_tokens": 128},
    "gpu": {"devices": [], "memory_fraction": 0.3},
}
HEAVY_COLUMNS = {"judged_traces": ["completion", "judge_completion", "token_logprobs", "token_ends"]}
# the generation cache's parts: files the device tool brings back (16 MiB each) with room to spare;
# zstd level 9 is within 6% of level 19's size at a fifteenth of its time (rows of teacher traces)
CACHE_FOLDER = "generation_cache"
CACHE_PART_BYTES = 12_000_000
CACHE_ZSTD_LEVEL = 9


def export(data: Path, out: Path, cache_part_bytes: int = CACHE_PART_BYTES) -> Path:
    """The report's tables into OUT/gpu_study_tables.tar (where the data folder holds derived's
    experiment.yaml, only that cut's rows: :func:`current_rows`), and the generation cache into parts under
    OUT/generation_cache/ (always: every device call's export brings the cache so far back, so a
    session cut off by its time still leaves the next one its traces)."""
    from trace_assets.experiment import database_path
    from trace_assets.generation.cache_store import CACHE_TABLE
    from trace_assets.storage import connect, table_names

    out.mkdir(parents=True, exist_ok=True)
    target = out / "gpu_study_tables.tar"
    cache = None
    cut = data / "experiment.yaml"  # derived's file: the cut this data folder ran last
    with connect(database_path(data), read_only=True) as connection, tarfile.open(target, "w") as tar:
        present = table_names(connection)
        frames = {}
        for table in (table for table in TABLES if table in present):
            frame = connection.sql(f"SELECT * FROM {table}").pl()
            frames[table] = frame.drop([c for c in HEAVY_COLUMNS.get(table, []) if c in frame.columns])
        if cut.exists():
            from trace_assets.experiment import load_experiment

            frames = current_rows(frames, load_experiment(cut))
        for table, frame in frames.items():
            buffer = io.BytesIO()
            frame.write_parquet(buffer, compression="zstd", compression_level=19)
            info = tarfile.TarInfo(f"{table}.parquet")
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)
            print(f"{table}: {frame.height} rows, {info.size / 1e6:.1f} MB", flush=True)
        for extra in ("study_times.json",):
            if (data / extra).exists():
                tar.add(data / extra, arcname=extra)
        # the device's own report, where this cut's accuracy is there (else it is an earlier cut's)
        reported = "accuracy" in frames and frames["accuracy"].height > 0
        for path in sorted((data / "report").glob("*")) if reported else []:
            tar.add(path, arcname=f"device_report/{path.name}")
        if CACHE_TABLE in present:
            cache = connection.sql(f"SELECT * FROM {CACHE_TABLE} ORDER BY request_hash, sample_index").pl()
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB", flush=True)
    if cache is not None:
        export_cache(cache, out / CACHE_FOLDER, cache_part_bytes)
    return target


def current_rows(frames: dict, experiment) -> dict:
    """``frames`` (the study's tables) without what an earlier cut of another problem set or other arms left
    in the same data folder: a table's partitions are replaced only where this cut materializes them, so
    the fifth run's gsm8k answers and its G_normal_checked arm were still in the tables when Countdown ran
    there. Kept: the rows of the experiment's arms (the base arms too) and of its problems (the problems
    table is always this cut's); accuracy where its arm still has answers, trace statistics where it still
    has examples."""
    import polars as pl

    from trace_assets.experiment import BASE_DATASETS

    arms = sorted({*experiment.datasets, *BASE_DATASETS})
    ids = frames["problems"]["problem_id"] if "problems" in frames else None
    kept = {}
    for name, frame in frames.items():
        if "dataset" in frame.columns and not name.startswith("round_"):
            frame = frame.filter(pl.col("dataset").is_in(arms))
        if ids is not None and name != "problems" and "problem_id" in frame.columns:
            frame = frame.filter(pl.col("problem_id").is_in(ids))
        kept[name] = frame
    for name, source, keys in (
        ("accuracy", "eval_results", ["dataset", "student"]),
        ("trace_stats", "sft_examples", ["dataset"]),
    ):
        if name in kept and source in kept:
            kept[name] = kept[name].join(kept[source].select(keys).unique(), on=keys, how="semi")
    return kept


def export_cache(cache, folder: Path, part_bytes: int = CACHE_PART_BYTES) -> list[Path]:
    """The generation cache's rows, every column, as zstd Parquet files ``part-NNN.parquet`` in
    ``folder`` of at most ``part_bytes`` each (parts an earlier export left there are removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    paths = []
    for index, data in enumerate(_parquet_parts(cache, part_bytes)):
        paths.append(folder / f"part-{index:03d}.parquet")
        paths[-1].write_bytes(data)
    sizes = [path.stat().st_size for path in paths]
    print(
        f"{CACHE_FOLDER}: {cache.height} rows in {len(paths)} parts, {sum(sizes) / 1e6:.1f} MB "
        f"(largest {max(sizes) / 1e6:.1f} MB) in {folder}",
        flush=True,
    )
    return paths


def _parquet_parts(frame, limit: int) -> Iterator[bytes]:
    """``frame`` as Parquet files of at most ``limit`` bytes: written whole, and if larger, cut into
    as many equal runs of rows as its size asks for, each cut again while still larger (a single
    row stays whole)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", compression_level=CACHE_ZSTD_LEVEL)
    if buffer.tell() <= limit or frame.height <= 1:
        yield buffer.getvalue()
        return
    rows = math.ceil(frame.height / math.ceil(buffer.tell() / limit))
    for start in range(0, frame.height, rows):
        yield from _parquet_parts(frame.slice(start, rows), limit)


def cache_parts(folder: Path) -> list[Path]:
    """The generation cache's part files in ``folder``, or in its generation_cache/ (an export's OUT)."""
    from trace_assets.errors import InputError

    for candidate in (folder, folder / CACHE_FOLDER):
        parts = sorted(candidate.glob("part-*.parquet"))
        if parts:
            return parts
    found = f"no part-NNN.parquet files in it or in its {CACHE_FOLDER}/" if folder.is_dir() else "no such folder"
    raise InputError(
        f"{folder}: {found}; expected the generation cache's parts that bench/gpu_study.py export writes to OUT/{CACHE_FOLDER}/"
    )


def read_cache_part(path: Path):
    """One part file's rows; InputError naming the file if it is not Parquet or lacks a cache column."""
    import polars as pl

    from trace_assets.errors import InputError
    from trace_assets.generation.cache_store import CACHE_SCHEMA

    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise InputError(f"{path}: not a Parquet file ({error}); expected a part of the generation cache") from None
    missing = [column for column in CACHE_SCHEMA if column not in frame.columns]
    if missing:
        raise InputError(
            f"{path}: no column {', '.join(missing)}; expected the generation cache's columns "
            f"{', '.join(CACHE_SCHEMA)} (and created_at), as bench/gpu_study.py export writes them"
        )
    return frame


def load_cache(data: Path, folders: list[Path]) -> tuple[int, int]:
    """Load the generation cache's parts in ``folders`` into the data folder's database (created if
    new) before a run: rows whose (request hash, sample index) it has are kept, not duplicated.
    Every file is read before any row is added. Returns (rows loaded, rows already there)."""
    import duckdb

    from trace_assets.errors import InputError
    from trace_assets.experiment import database_path
    from trace_assets.generation.cache_store import add_missing_rows

    parts = [(path, read_cache_part(path)) for folder in folders for path in cache_parts(folder)]
    loaded = present = 0
    for path, frame in parts:
        try:
            added = add_missing_rows(database_path(data), frame)
        except (duckdb.ConstraintException, duckdb.ConversionException, duckdb.BinderException) as error:
            detail = " ".join(str(error).split())
            raise InputError(f"{path}: its rows do not fit the generation cache table ({detail})") from None
        loaded += added
        present += frame.height - added
    print(f"{CACHE_FOLDER}: {loaded} rows loaded from {len(parts)} parts, {present} already there", flush=True)
    return loaded, present


def cut(spec: dict, styles: list[str] | None = None, datasets: list[str] | None = None) -> dict:
    """``spec`` with only ``styles`` and ``datasets`` (either None: all of them): the datasets that use
    no other style (a replicate with its original; an arm that exists to be token-matched goes with
    its group), and the contrasts, comparison groups and token-matching groups among those."""
    styles = styles or spec["styles"]
    kept = {
        name: recipe
        for name, recipe in spec["datasets"].items()
        if recipe.get("style", styles[0]) in styles and (datasets is None or name in datasets)
    }
    for group in spec.get("token_matching") or []:
        if not set(group["datasets"]) <= set(kept):
            kept = {name: recipe for name, recipe in kept.items() if name not in group["datasets"]}
    kept = {name: recipe for name, recipe in kept.items() if recipe.get("replicate_of", name) in kept}
    names = {*kept, "base", "base_few_shot", "baseline"}
    contrasts = [c for c in spec.get("contrasts") or [] if isinstance(c, list) and set(c) <= names]
    groups = [[n for n in group if n in kept] for group in (spec.get("comparisons") or {}).get("groups") or []]
    matching = [g for g in spec.get("token_matching") or [] if set(g["datasets"]) <= set(kept)]
    suffix = "_".join(styles) if styles != spec["styles"] else ""
    suffix += "_cut" if len(kept) < len(spec["datasets"]) else ""
    return {
        **spec,
        "name": f"{spec['name']}_{suffix}" if suffix else spec["name"],
        "styles": styles,
        "datasets": kept,
        "contrasts": contrasts,
        "comparisons": {**(spec.get("comparisons") or {}), "groups": [g for g in groups if len(g) > 1]},
        "token_matching": matching,
    }


def derived(
    experiment_path: str,
    data: Path,
    shrink: bool,
    styles: list[str] | None,
    datasets: list[str] | None = None,
    settings: list[str] | None = None,
) -> str:
    """The experiment file, CPU-sized (SHRINK) and/or cut to ``styles`` and ``datasets``, with
    ``settings`` (``teacher.sampling.n=8``: a dotted key, a YAML value) changed, written into the data
    folder."""
    import yaml

    def merge(base: dict, change: dict) -> dict:
        return {**base, **{k: merge(base.get(k) or {}, v) if isinstance(v, dict) else v for k, v in change.items()}}

    spec = yaml.safe_load(Path(experiment_path).read_text())
    if styles or datasets:
        spec = cut(spec, styles, datasets)
    if shrink:
        spec = merge(spec, SHRINK)
        spec["training"]["seeds"] = spec["training"].get("seeds", [0])[:SHRINK_SEEDS]
        spec["name"] += "_cpu"
    for setting in settings or []:
        key, _, value = setting.partition("=")
        change: dict = {}
        *parents, leaf = key.split(".")
        node = change
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
        spec = merge(spec, change)
    data.mkdir(parents=True, exist_ok=True)
    target = data / "experiment.yaml"
    target.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(target)


def read_tables(folder: Path) -> dict:
    import polars as pl

    if folder.is_file():  # the tar as it came back
        with tarfile.open(folder) as tar:
            return {
                Path(member.name).stem: pl.read_parquet(io.BytesIO(tar.extractfile(member).read()))  # type: ignore[union-attr]
                for member in tar.getmembers()
                if member.name.endswith(".parquet")
            } | {"_times": json.loads(tar.extractfile("study_times.json").read())}  # type: ignore[union-attr]
    return {path.stem: pl.read_parquet(path) for path in folder.glob("*.parquet")} | {
        "_times": json.loads((folder / "study_times.json").read_text())
    }


# the columns that name whose rows a table holds: an arm, its student and training seed (and its task)
ARM_KEYS = ("dataset", "student", "seed", "task", "round_key")


def merged_tables(exports: list[dict], names: list[str] | None = None) -> dict:
    """Several exports of one study (the same problems, styles and settings, other training seeds or arms,
    e.g. more seeds for the A/A pair in a later session) as one: each arm x student x seed (x task) comes
    from the first export that holds it, so rows are never counted twice (the untrained students'
    answers are in every export); a table without those columns (problems, traces) is the first
    export's. The untrained students' answers (one evaluation an export, copied under each of its seeds)
    come from the first export that holds that student (and task, round). ``accuracy`` is left out, to be computed again from the merged answers, and the times
    are the last export's. Exports whose problems differ are not one study: a ValueError names them."""
    import polars as pl

    names = names or [f"export {number}" for number in range(1, len(exports) + 1)]
    problem_ids = [set(export["problems"]["problem_id"]) for export in exports if "problems" in export]
    for name, ids in zip(names[1:], problem_ids[1:], strict=False):
        if ids != problem_ids[0]:
            raise ValueError(
                f"{name}: its problems differ from {names[0]}'s ({len(ids ^ problem_ids[0])} problem ids in one only): "
                "not an export of the same study (the same problems settings and seed)"
            )
    from trace_assets.experiment import BASE_DATASETS

    merged: dict = {"_times": exports[-1]["_times"]}
    names = {name for export in exports for name in export if name not in ("_times", "accuracy")}
    for name in sorted(names):
        frames = [export[name] for export in exports if name in export]
        keys = [column for column in ARM_KEYS if column in frames[0].columns]
        if not keys:
            merged[name] = frames[0]
            continue
        table = frames[0]
        # the untrained students' arms (checkpoints status 'base', eval_results training 'none') are the base arms
        copied = pl.col("dataset").is_in(BASE_DATASETS) if "dataset" in keys else pl.lit(False)
        for frame in frames[1:]:
            trained = frame.filter(~copied)
            new = trained.join(table.select(keys).unique(), on=keys, how="anti", nulls_equal=True)
            # an untrained student's answers are one evaluation, copied under each training seed of its export:
            # another export's come under other seeds, so they are matched without the seed
            whole = [key for key in keys if key != "seed"]
            again = frame.filter(copied)
            new_untrained = again.join(table.select(whole).unique(), on=whole, how="anti", nulls_equal=True)
            table = pl.concat([table, new, new_untrained], how="diagonal_relaxed")
        merged[name] = table
    return merged


def trained_seeds(eval_results, experiment) -> list[int]:
    """The training seeds the answers of the file's trained arms come from. Tables keep a replicate's
    nominal seed (the seed it is a replicate at); only its training run adds REPLICATE_SEED_OFFSET."""
    rows = eval_results.filter(eval_results["dataset"].is_in(list(experiment.datasets)))
    return sorted(set(rows["seed"].to_list()))


def seed_spread(eval_results) -> list[dict]:
    """Each arm's accuracy per training seed and its seed-to-seed SD, in points and in logits."""
    import math

    import polars as pl

    per_seed = (
        eval_results.group_by(["dataset", "student", "seed"])
        .agg(pl.col("is_correct").mean().alias("accuracy"), pl.len().alias("n"))
        .sort(["student", "dataset", "seed"])
    )
    rows = []
    for (dataset, student), group in per_seed.group_by(["dataset", "student"], maintain_order=True):
        accuracies = group["accuracy"].to_list()
        logits = [math.log(max(a, 1e-3) / max(1 - a, 1e-3)) for a in accuracies]
        rows.append(
            {
                "dataset": dataset,
                "student": student,
                "seeds": group["seed"].to_list(),
                "accuracy_per_seed": [round(a, 4) for a in accuracies],
                "seed_sd_points": round(float(pl.Series(accuracies).std() or 0.0) * 100, 2) if len(accuracies) > 1 else None,
                "seed_sd_logit": round(float(pl.Series(logits).std() or 0.0), 3) if len(logits) > 1 else None,
            }
        )
    return rows


def with_missing_tables(tables: dict, experiment) -> dict:
    """A run cut off after ``eval_results`` (out of device time during the failure judging, which
    runs in the same stage) still gives its finding: ``accuracy`` computed here from the answers
    as the accuracy asset computes it (its declared noise only: the device's database is not here),
    and no failure modes."""
    from trace_assets.judging.schemas import JudgedTraceSchema
    from trace_assets.reporting.schemas import FailureModeSchema
    from trace_assets.reporting.stats import NoiseSettings, accuracy_summary
    from trace_assets.tables import empty_frame

    if "accuracy" not in tables:
        print("no accuracy table in the export: computed from eval_results", flush=True)
        settings = NoiseSettings(declared_sd=experiment.statistics.seed_sd)
        tables["accuracy"] = accuracy_summary(tables["eval_results"], experiment.seed, settings)
    if "failure_modes" not in tables:
        print("no failure_modes table in the export: the report has no failure modes", flush=True)
        tables["failure_modes"] = empty_frame(FailureModeSchema)
    if "judged_traces" not in tables:  # a study with no styles (human solutions alone) has no traces
        tables["judged_traces"] = empty_frame(JudgedTraceSchema)
    return tables


def loop_figures(tables: dict) -> dict:
    """The closed loop's rounds (accuracy on validation and test per round, change against the parent)
    and each chain's last round against round 0 on test, from round_styles and round_evals; None
    for a study without the loop."""
    from trace_assets.loop.report import last_against_first, rounds_table

    if "round_styles" not in tables or "round_evals" not in tables:
        return {"loop_rounds": None, "loop_test_last_vs_round_0": None}
    styles, evals = tables["round_styles"], tables["round_evals"]
    return {
        "loop_rounds": rounds_table(styles, evals).to_dicts(),
        "loop_test_last_vs_round_0": last_against_first(styles, evals).to_dicts(),
    }


def seed_sd_against_calibrate(spread: list[dict], declared: float | None) -> dict:
    """Each trained arm's measured seed-to-seed SD (logit) against the ``statistics.seed_sd`` the file
    declares, which ``trace-assets calibrate`` simulates at, with one arm at 3x and at 8x it."""
    import math

    single = len({row["student"] for row in spread}) <= 1
    trained = {
        # one student's arms are named by dataset alone, as results.json's seed_spread; several students': dataset|student
        (row["dataset"] if single else f"{row['dataset']}|{row['student']}"): row["seed_sd_logit"]
        for row in spread
        if not row["dataset"].startswith("base") and len(row["seeds"]) > 1
    }
    pooled = math.sqrt(sum(sd**2 for sd in trained.values()) / len(trained)) if trained else None
    return {
        "declared_seed_sd_logit": declared,
        "calibrate_worlds": "every arm at the declared SD, one arm at 3x and one at 8x it, one-seed designs (trace_assets/reporting/calibration.py: worlds)",
        "measured_pooled_logit": None if pooled is None else round(pooled, 3),
        "measured_over_declared": {arm: round(sd / declared, 2) for arm, sd in trained.items()} if declared else None,
        "largest_over_smallest": round(max(trained.values()) / min(trained.values()), 2)
        if trained and min(trained.values()) > 0
        else None,
        "note": "the SD of per-seed accuracies in logits, answer noise included: near 5% accuracy a seed's accuracy over "
        "1,319 problems varies ~0.6 points (~0.13 logit) from answer noise alone, so low-accuracy arms overstate training noise",
    }


ROUNDS_FILES = ("rounds.md", "accuracy_by_round.png")


def copy_rounds_report(tables_path: Path, output: Path) -> None:
    """The closed loop's rounds report as the device wrote it (device_report/ in the export): its revision
    diffs read the round style files, which stay on the device."""
    if tables_path.is_file():
        with tarfile.open(tables_path) as tar:
            for name in ROUNDS_FILES:
                member = next((m for m in tar.getmembers() if m.name == f"device_report/{name}"), None)
                if member is not None:
                    (output / name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        return
    for name in ROUNDS_FILES:
        if (tables_path / "device_report" / name).is_file():
            (output / name).write_bytes((tables_path / "device_report" / name).read_bytes())


def gpu_samples(tables_path: Path) -> Path:
    """Where an export's nvidia-smi samples are: in its folder (the call's $OUT/tables_<time>/), beside a tar.
    gpu_study_call.sh appends to one file while the machine stays warm, so the last export's samples cover the
    calls on its machine: a run over several machines (sessions) is measured on its last."""
    return (tables_path if tables_path.is_dir() else tables_path.parent) / "gpu_util.csv"


def results(tables_paths: list[Path], output: Path, experiment_path: str) -> dict:
    from bench.study_run import busy_share, engine_figures, time_figures, work_figures
    from trace_assets.experiment import load_experiment
    from trace_assets.reporting.report import StudyTables, build_report, statistics_plan

    experiment = load_experiment(experiment_path)
    exports = [read_tables(path) for path in tables_paths]
    merged = len(exports) > 1
    tables = with_missing_tables(merged_tables(exports, [str(p) for p in tables_paths]) if merged else exports[0], experiment)
    # merged exports hold more seeds than the file names: the report says, and plans power for, those trained
    seeds = trained_seeds(tables["eval_results"], experiment) if merged else experiment.training.seeds
    study = StudyTables(**{field.name: tables[field.name] for field in dataclasses.fields(StudyTables)})
    report = build_report(
        experiment.name,
        seeds,
        experiment.judge_note(),
        experiment.planned_contrasts(),
        study,
        experiment.confidence_pairs(),
        statistics_plan(experiment),  # as the report asset builds it
    )
    output.mkdir(parents=True, exist_ok=True)
    for name, png in report.plots.items():
        (output / name).write_bytes(png)
    (output / "report.md").write_text(report.text)
    copy_rounds_report(tables_paths[-1], output)
    accuracy = tables["accuracy"]
    spread = seed_spread(tables["eval_results"])
    figures = {
        "experiment": experiment_path,
        "tables": [str(path) for path in tables_paths],
        "accuracy": accuracy.to_dicts(),
        "contrasts": report.contrasts.to_dicts(),  # every contrast the report tested, A/A controls marked
        "seed_spread": spread,
        "seed_sd_vs_calibrate": seed_sd_against_calibrate(spread, experiment.statistics.seed_sd),
        "distinguishable_contrasts": report.distinguishable,
        **loop_figures(tables),
        "times": time_figures(tables["_times"], experiment_path, ROOT),
        # issue 25's study-level figures: engine starts per model (from the steps' metadata, the run's last
        # export), and the GPU's busy share from nvidia-smi's samples beside it (gpu_study_call.sh)
        "engines": engine_figures(tables["_times"], experiment),
        "gpu_busy": busy_share(gpu_samples(tables_paths[-1])),
        # ...and the share of the GPU steps' time spent generating and training, from the steps' metadata
        "gpu_work": work_figures(tables["_times"]),
        # earlier cuts on the same data folder, each with the estimate made before it ran; a later cut
        # reuses their traces and checkpoints, so the cut that ran its work first is the one whose steps
        # compare with its estimate
        "earlier_cuts_times": [
            time_figures(earlier, f"an earlier cut (experiment digest {earlier.get('experiment_digest')})", ROOT)
            for earlier in tables["_times"].get("earlier_runs", [])
        ],
    }
    (output / "results.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(report.text)
    return figures


def main() -> None:
    import time

    started = time.perf_counter()  # --budget-s counts from here: the cache load is within the call's limit too
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    run.add_argument("--data", default="/tmp/gpu_study")
    run.add_argument("--stop-after-s", type=float, default=None)
    run.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="the call's time limit: stop before a stage whose dry-run estimate no longer fits (once one stage ran)",
    )
    run.add_argument("--shrink", action="store_true", help="the CPU rehearsal: the same file at tiny sizes")
    run.add_argument("--styles", nargs="+", help="keep only these styles and the arms that need no other")
    run.add_argument("--datasets", nargs="+", help="keep only these arms (and the contrasts among them)")
    run.add_argument("--until", help="stop once the stage holding this asset is done (checkpoints: before evaluating)")
    run.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="change settings: teacher.sampling.n=8")
    run.add_argument("--cache-from", nargs="+", default=[], metavar="DIR", help="load generation cache parts (export's) first")
    exporter = sub.add_parser("export")
    exporter.add_argument("--data", default="/tmp/gpu_study")
    exporter.add_argument("--out", required=True)
    rebuild = sub.add_parser("results")
    rebuild.add_argument(
        "--tables",
        required=True,
        nargs="+",
        help="the exported tar, or a folder of its Parquet files; several: one study's exports merged (each arm x seed from the first that has it)",
    )
    rebuild.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="the file the run used (its data folder's copy if cut)")
    rebuild.add_argument("--output", default=str(ROOT / "bench" / "results" / "gpu_study"))
    args = parser.parse_args()
    if args.command == "run":
        from bench.study_run import run_study

        if args.cache_from:
            from trace_assets.errors import InputError

            try:
                load_cache(Path(args.data), [Path(folder) for folder in args.cache_from])
            except InputError as error:  # one message and exit status 2, as trace-assets reports a bad file
                run.error(str(error))
        changed = args.shrink or args.styles or args.datasets or args.set
        experiment = (
            derived(args.experiment, Path(args.data), args.shrink, args.styles, args.datasets, args.set)
            if changed
            else args.experiment
        )
        budget = None if args.budget_s is None else args.budget_s - (time.perf_counter() - started)
        _, done = run_study(experiment, Path(args.data), args.stop_after_s, args.until, budget)
        print("study complete" if done else "study not complete: run again with the same --data", flush=True)
    elif args.command == "export":
        export(Path(args.data), Path(args.out))
    else:
        results([Path(path) for path in args.tables], Path(args.output), args.experiment)


if __name__ == "__main__":
    main()
