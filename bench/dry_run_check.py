"""dry-run's estimate per GPU step, made now, against what the second and third GPU runs measured
(issue 24: every step within 30%). CPU only, a few seconds:

    python bench/dry_run_check.py

The second run's experiment is its cut (``bench/gpu_study.py run --styles normal --datasets H H_aa --set
teacher.sampling.n=8``), rewritten by gpu_study.py's ``derived``, with ``training.compile: true``, the word problems
alone and pooled training as gpu_study.yaml had them then (it trains eager since); the third run's is its own file. The estimate counts
one SFT launch per checkpoints step, as the code launches now; the second run's code launched once per
run and the third run's once per dataset (two launches), so their SFT estimates are short by those launches. The
measured seconds are those files' ``steps.measured_s``; a step they don't list did not run to its end
(the second run's evaluation) or had nothing to do (the third run's teacher and judge: its estimate must be 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu_study import derived  # noqa: E402
from bench.study_run import GPU_STEPS, estimate  # noqa: E402
from trace_assets.experiment import load_experiment  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu_study"
SMOKE_COMMIT = "a5d4736"  # the commit the GPU smoke run measured


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
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name, (path, measured) in runs(Path(folder)).items():
            estimated = estimate(load_experiment(path))
            print(f"{name} run ({path.replace(folder, '<cut>')}): step, estimate s, measured s, estimate/measured")
            for step in GPU_STEPS:
                guess, took = estimated.get(step, 0.0), measured.get(step)
                ratio = f"{guess / took:.2f}" if took else ("nothing to do" if guess == 0 else "not measured")
                print(f"  {step:<15} {guess:7.1f}  {'' if took is None else f'{took:7.1f}':>7}  {ratio}")


if __name__ == "__main__":
    main()
