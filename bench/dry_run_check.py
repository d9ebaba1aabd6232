"""dry-run's estimate per GPU step, made now, against what the GPU smoke run, the second and third GPU
runs and the fourth run's first cut measured (issue 24: every step within 30%). CPU only, a few seconds:

    python bench/dry_run_check.py

The second run's experiment is its cut (``bench/gpu_study.py run --styles normal --datasets H H_aa --set
teacher.sampling.n=8``), rewritten by gpu_study.py's ``derived``, with ``training.compile: true``, the word problems
alone and pooled training as gpu_study.yaml had them then (it trains eager since); the third run's is its own file. The estimate counts
one SFT launch per checkpoints step, as the code launches now; the second run's code launched once per
run and the third run's once per dataset (two launches), so their SFT estimates are short by those launches. The
measured seconds are those files' ``steps.measured_s``; a step they don't list did not run to its end
(the second run's evaluation) or had nothing to do (the third run's teacher and judge: its estimate must be 0).
The smoke and second runs' code started an engine of the judge's own (engines were not yet kept: the judge
now runs on the teacher's), and the second and third runs' a second evaluation engine for the trained
checkpoints (their engine files now match the base model's): their judge and evaluation estimates are short by
those starts (about 38 s each, warm); the fourth run's failure judge, a stage of its own then, started an engine
that it now shares with the evaluation (demo.STAGES: one stage, one Dagster run), so its failure estimate is
short by that start (~29 s warm). The loop run's file is loop_run/experiment.yaml, experiments/gpu_loop.yaml as it ran (digest 2dbd115ab11ffd32), its
study steps results.json's, its rounds run.json's. The fourth run's first cut is fourth_run/experiment.yaml cut to the normal style and five arms (run.json's first
command; the file is byte for byte the one it ran, digest d53e6182a5cc9e8a), its seconds results.json's
``earlier_cuts_times[0]``. The fifth run's file is fifth_run/experiment.yaml (digest a571c9e095ed8c99), estimated on a
data folder holding the fourth run's generation cache, as the run began; its seconds run.json's. The Countdown
run's is countdown_run/experiment.yaml (digest a45b4633955c3a41), estimated on its own first part's cache. The sixth
run's is sixth_run/experiment.yaml (digest 2275cecbe94840e4), estimated on the fourth run's cache as it began; its
estimate made before the run is sixth_run/estimate_before_run.json. The runs
before TRL's fused LM head (9b79f4c: the smoke, second, third and fourth runs) are estimated with
``training.fused_lm_head: false``, as their code trained; the loop and fifth runs trained with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu_study import derived  # noqa: E402
from bench.study_run import GPU_STEPS, estimate, experiment_digest  # noqa: E402
from trace_assets.experiment import load_experiment  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu_study"
SMOKE_COMMIT = "a5d4736"  # the commit the GPU smoke run measured
CUT_1_DIGEST = "d53e6182a5cc9e8a"  # bench/study_run.py's digest of the fourth run's first cut's experiment file
FIFTH_DIGEST = "a571c9e095ed8c99"  # and of the fifth run's
COUNTDOWN_DIGEST = "a45b4633955c3a41"  # and of the Countdown run's evaluation call
SIXTH_DIGEST = "2275cecbe94840e4"  # and of the sixth run's
BEFORE_FUSED_HEAD = {"gpu_smoke", "second", "third", "fourth (cut 1)"}  # their code had no fused LM head (9b79f4c)


def warn_if_not_as_run(path: Path, expected: str, what: str) -> None:
    """A warning where ``path`` is not byte for byte the file the run ran (its digest in study_times.json)."""
    digest = experiment_digest(path)
    if digest != expected:
        print(f"warning: {what} has digest {digest}, not {expected}: not the file it ran")


def runs(folder: Path) -> dict[str, tuple[str, dict[str, float]]]:
    """Each run's experiment file and measured seconds per step."""
    second = derived(
        str(ROOT / "experiments" / "gpu_study.yaml"),
        folder,
        False,
        ["normal"],
        ["H", "H_aa"],
        ["teacher.sampling.n=8", "training.compile=true", "problems.tasks=[gsm8k]", "training.per_task=false"],
    )
    smoke = folder / "gpu_smoke.yaml"
    smoke.write_text(
        subprocess.run(
            ["git", "show", f"{SMOKE_COMMIT}:experiments/gpu_smoke.yaml"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    )
    fourth = RESULTS / "fourth_run"
    cut_1 = derived(
        str(fourth / "experiment.yaml"),
        folder / "cut_1",
        False,
        ["normal"],
        ["H", "H_aa", "G_normal", "W_normal", "mix25_normal"],
        ["teacher.sampling.n=8", "problems.tasks=[gsm8k]"],
    )
    warn_if_not_as_run(Path(cut_1), CUT_1_DIGEST, "the fourth run's cut 1, rebuilt,")
    return {
        "gpu_smoke": (
            str(smoke),
            json.loads((ROOT / "bench" / "results" / "gpu.json").read_text())["sections"]["gpu_smoke"]["gpu_step_s"],
        ),
        "second": (second, json.loads((RESULTS / "second_run.json").read_text())["steps"]["measured_s"]),
        "third": (
            str(RESULTS / "third_run" / "experiment.yaml"),
            json.loads((RESULTS / "third_run" / "run.json").read_text())["steps"]["measured_s"],
        ),
        "fourth (cut 1)": (cut_1, json.loads((fourth / "results.json").read_text())["earlier_cuts_times"][0]["gpu_step_s"]),
        "loop": (
            str(RESULTS / "loop_run" / "experiment.yaml"),
            json.loads((RESULTS / "loop_run" / "results.json").read_text())["times"]["gpu_step_s"],
        ),
    }


def loop_rounds() -> None:
    """The loop run's whole rounds (run.json: each from the Dagster step events of its log) against
    round_steps now; r2 was cut off by a call's limit and run again, so it is left out."""
    from trace_assets.loop.rounds import round_steps

    experiment = load_experiment(RESULTS / "loop_run" / "experiment.yaml")
    measured = json.loads((RESULTS / "loop_run" / "run.json").read_text())["steps_vs_estimate_made_before_the_run"]["rounds"]
    print(
        "loop run's rounds: round, estimate s, measured s, estimate/measured (per step: styles, traces, SFT, evaluation, failures)"
    )
    for name in ("r0", "r1", "r3"):
        steps = round_steps(experiment, "normal", number=int(name[1]))
        took = measured["measured_s"][name]
        guess = sum(steps.values())
        ratios = " ".join(f"{steps[step] / took[step]:.2f}" if took[step] else "-" for step in steps)
        print(f"  {name:<4} {guess:7.1f}  {took['total']:7.1f}  {guess / took['total']:.2f}  ({ratios})")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        # each run began on a fresh machine: an empty data folder, so the local model is built first
        os.environ["TRACE_ASSETS_DATA_DIR"] = str(Path(folder) / "data")
        for name, (path, measured) in runs(Path(folder)).items():
            experiment = load_experiment(path)
            if name in BEFORE_FUSED_HEAD:
                training = experiment.training.model_copy(update={"fused_lm_head": False})
                experiment = experiment.model_copy(update={"training": training})
            estimated = estimate(experiment)
            print(f"{name} run ({path.replace(folder, '<cut>')}): step, estimate s, measured s, estimate/measured")
            for step in GPU_STEPS:
                guess, took = estimated.get(step, 0.0), measured.get(step)
                ratio = f"{guess / took:.2f}" if took else ("nothing to do" if guess == 0 else "not measured")
                print(f"  {step:<15} {guess:7.1f}  {'' if took is None else f'{took:7.1f}':>7}  {ratio}")
        # the fifth run's teacher ratio is 1.00 by construction: estimates.CACHED_SAMPLE_S was fitted on it
        cached_run(
            Path(folder) / "fifth", "fifth_run", "fourth_run", FIFTH_DIGEST, "from the fourth run's cache; teacher fitted on it"
        )
        cached_run(
            Path(folder) / "countdown",
            "countdown_run",
            "countdown_run",
            COUNTDOWN_DIGEST,
            "from its first part's cache; SFT's fused rate fitted in part on it",
        )
        cached_run(
            Path(folder) / "sixth",
            "sixth_run",
            "fourth_run",
            SIXTH_DIGEST,
            "from the fourth run's cache; the failure judge refitted after it, not on it",
        )
    loop_rounds()


# generation caches kept in the history rather than the tree (each device call carries the tree): the commit
# that still holds them (docs/gpu-study.md)
CACHES_IN_HISTORY = {"countdown_run": "b98efc218d20c420f6b28ad4c37193f94a46968c"}


def cache_folder(name: str, scratch: Path) -> Path:
    """The run's committed generation cache: its folder in the tree, or its parts restored from the commit
    that still holds them (CACHES_IN_HISTORY) into ``scratch``."""
    folder = RESULTS / name / "generation_cache"
    if folder.exists() or name not in CACHES_IN_HISTORY:
        return folder

    commit, inside = CACHES_IN_HISTORY[name], folder.relative_to(ROOT).as_posix()
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{commit}:{inside}"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    restored = scratch / f"{name}_cache"
    restored.mkdir(parents=True, exist_ok=True)
    for part in listed.stdout.split():
        blob = subprocess.run(["git", "show", f"{commit}:{inside}/{part}"], cwd=ROOT, capture_output=True, check=True)
        (restored / part).write_bytes(blob.stdout)
    return restored


def cached_run(data: Path, name: str, cache: str, digest: str, note: str) -> None:
    """A run that began with an earlier run's generation cache loaded (bench/gpu_study.py run --cache-from):
    estimated on a data folder holding that cache, as the run began; its seconds run.json's."""
    from bench.gpu_study import load_cache

    path = RESULTS / name / "experiment.yaml"
    warn_if_not_as_run(path, digest, f"the {name} file")
    os.environ["TRACE_ASSETS_DATA_DIR"] = str(data)
    load_cache(data, [cache_folder(cache, data.parent)])
    estimated = estimate(load_experiment(path))
    measured = json.loads((RESULTS / name / "run.json").read_text())["steps"]["measured_s"]
    print(f"{name.replace('_', ' ')} ({note}): step, estimate s, measured s, estimate/measured")
    for step in GPU_STEPS:
        guess, took = estimated[step], measured[step]
        print(f"  {step:<15} {guess:7.1f}  {took:7.1f}  " + (f"{guess / took:.2f}" if took else "-"))


if __name__ == "__main__":
    main()
