"""bench/gpu.py's bookkeeping, without a GPU: the SFT section's guard against non-finite losses, and the
generation section merged one model per call into gpu.json."""

import json

import pytest

from bench import gpu


def test_loss_error_names_the_sides_whose_final_loss_is_not_finite():
    assert gpu.loss_error({"bare": 8.27, "ours": 9.19}) is None
    assert "ours nan" in gpu.loss_error({"bare": 8.27, "ours": float("nan")})
    both = gpu.loss_error({"bare": float("nan"), "ours": float("inf")})
    assert "bare nan" in both and "ours inf" in both
    assert "ours None" in gpu.loss_error({"bare": 8.27, "ours": None})  # nothing logged: nothing to vouch for the run


def _run(ratio: float) -> dict:
    return {
        "device": "NVIDIA H100 80GB HBM3",
        "model": "m",
        "prompts": 1319,
        "bare": {},
        "ours": {"greedy": {"ratio_vs_bare": ratio}, "sampled": {"ratio_vs_bare": ratio + 0.1}},
    }


@pytest.fixture
def merge(tmp_path, monkeypatch):
    """One device call of the generation section: ``runs`` merged into a gpu.json as generation_section does."""
    monkeypatch.setattr(gpu, "device_name", lambda: "NVIDIA H100 80GB HBM3")
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({"generation_ratio_sampled": 1.1, "sections": {"generation": {"note": "earlier setup"}}}))

    def call(runs: dict) -> dict:
        recorded = json.loads(path.read_text())["sections"]["generation"]
        section, summary, stale = gpu.generation_figures(recorded, runs)
        gpu.merge_results(path, "generation", section, summary, stale)
        return json.loads(path.read_text())

    return call


def test_generation_one_model_per_call_keeps_the_others_figures(merge):
    results = merge({"random": {**_run(0.97), "parameters": 402}})
    assert results["generation_ratio_greedy"] == 0.97 and "generation_ratio_sampled" not in results
    assert results["sections"]["generation"]["parameters"] == 402
    assert "note" not in results["sections"]["generation"]  # the earlier setup's section is replaced

    results = merge({"smollm2": _run(0.9)})
    assert results["generation_ratio_greedy"] == 0.97 and results["generation_ratio_sampled_flat"] == pytest.approx(1.07)
    assert results["generation_ratio_greedy_smollm2"] == 0.9
    section = results["sections"]["generation"]
    assert section["parameters"] == 402 and section["ours"]["greedy"]["ratio_vs_bare"] == 0.97
    assert section["smollm2"]["ours"]["greedy"]["ratio_vs_bare"] == 0.9

    results = merge({"random": {**_run(1.02), "parameters": 402}})  # random again: SmolLM2's figures stay
    assert results["generation_ratio_greedy"] == 1.02 and results["generation_ratio_greedy_smollm2"] == 0.9
    assert results["sections"]["generation"]["smollm2"]["ours"]["greedy"]["ratio_vs_bare"] == 0.9
