"""Which checkpoints share a vLLM engine (weight_swap.engine_key), and what is logged when they don't."""

import json
import shutil
from pathlib import Path

from trace_assets.generation.types import ModelSpec
from trace_assets.generation.weight_swap import engine_differences, engine_key, unshared_engine_reason


def _copy(tiny_model, folder, edit=None) -> ModelSpec:
    """A copy of the tiny model's folder, ``edit(folder)`` applied to it."""
    shutil.copytree(tiny_model, folder)
    if edit:
        edit(folder)
    return ModelSpec(name=str(folder), path=str(folder))


def _update(file, **fields):
    file.write_text(json.dumps({**json.loads(file.read_text()), **fields}))


def test_what_a_trainer_writes_on_save_keeps_the_engine_and_what_changes_outputs_does_not(tiny_model, tmp_path):
    base = _copy(tiny_model, tmp_path / "base")

    def saved_by_a_gpu_trainer(folder):  # bf16, flex_attention, gradient checkpointing, a re-save's provenance
        _update(
            folder / "config.json",
            dtype="bfloat16",
            use_cache=False,
            attn_implementation="flex_attention",
            _attn_implementation_autoset=True,
            transformers_version="0.0",
            _name_or_path="/elsewhere",
        )
        _update(folder / "generation_config.json", _from_model_config=False, transformers_version="0.0")
        _update(folder / "tokenizer_config.json", is_local=True, local_files_only=True)

    trained = _copy(tiny_model, tmp_path / "trained", saved_by_a_gpu_trainer)
    assert engine_key(trained) == engine_key(base) and engine_differences(trained, base) == []
    changes_outputs = {
        "eos": lambda f: _update(f / "generation_config.json", eos_token_id=[0, 1]),
        "rope": lambda f: _update(f / "config.json", rope_parameters={"rope_theta": 1.0, "rope_type": "default"}),
        "vocab": lambda f: _update(f / "config.json", vocab_size=1024),
        "tokenizer": lambda f: _update(f / "tokenizer.json", truncation={"max_length": 8}),
        "pad_in_both": lambda f: (
            _update(f / "config.json", pad_token_id=0),
            _update(f / "generation_config.json", pad_token_id=0),
        ),
    }
    keys = {name: engine_key(_copy(tiny_model, tmp_path / name, edit)) for name, edit in changes_outputs.items()}
    assert engine_key(base) not in keys.values() and len(set(keys.values())) == len(keys)
    pad = ModelSpec(name="pad", path=str(tmp_path / "pad_in_both"))
    base_pad = {
        name: json.dumps(json.loads((Path(base.path) / name).read_text()).get("pad_token_id", "(absent)"))
        for name in ("config.json", "generation_config.json")
    }
    base_pad = {name: value if value != '"(absent)"' else "(absent)" for name, value in base_pad.items()}
    # each field with the checkpoint's value and the other's: what changed, not only where
    assert engine_differences(pad, base) == [
        f"config.json: pad_token_id=0 vs {base_pad['config.json']}",
        f"generation_config.json: pad_token_id=0 vs {base_pad['generation_config.json']}",
    ]
    tokenizer = ModelSpec(name="tokenizer", path=str(tmp_path / "tokenizer"))
    assert engine_differences(tokenizer, base) == ['tokenizer.json: truncation={"max_length": 8} vs null']


def test_a_further_engine_of_one_architecture_is_explained_by_the_closest_started_one(tiny_model, tmp_path):
    base = _copy(tiny_model, tmp_path / "base")
    rope = _copy(tiny_model, tmp_path / "rope", lambda f: _update(f / "config.json", rope_parameters={"rope_theta": 1.0}))
    template = _copy(tiny_model, tmp_path / "template", lambda f: (f / "chat_template.jinja").write_text("{{ messages }}"))
    other = _copy(tiny_model, tmp_path / "other", lambda f: _update(f / "config.json", architectures=["GPT2LMHeadModel"]))
    assert unshared_engine_reason(base, []) is None
    assert unshared_engine_reason(other, [base]) is None  # another model class: its own engine is no surprise
    reason = unshared_engine_reason(template, [rope, base])
    assert reason.startswith(f"{template.path} (['LlamaForCausalLM']) can't share the engine started for {base.path}: ")
    assert reason.endswith(": chat_template.jinja")  # not JSON: named alone


def test_a_checkpoint_takes_its_bases_tokens_and_generation_defaults_unless_its_vocabulary_changed(tiny_model, tmp_path):
    """What SFT saved under the GPU image (eos/pad aligned to a pad token the trainer set, a template
    file of its own) is replaced by the base's files, so evaluation serves both from one engine."""
    from trace_assets.generation.weight_swap import keep_base_engine_files

    base = _copy(tiny_model, tmp_path / "base", lambda f: _update(f / "config.json", pad_token_id=None))

    def saved_by_sft(folder):
        _update(folder / "config.json", pad_token_id=0, eos_token_id=0, hidden_act="silu")
        _update(folder / "generation_config.json", pad_token_id=0)
        _update(folder / "tokenizer_config.json", pad_token="<|endoftext|>")
        (folder / "chat_template.jinja").write_text("{{ messages }}")

    trained = _copy(tiny_model, tmp_path / "trained", saved_by_sft)
    assert engine_key(trained) != engine_key(base)
    changed = keep_base_engine_files(base.path, trained.path)
    assert sorted(changed) == ["chat_template.jinja", "config.json", "generation_config.json", "tokenizer_config.json"]
    assert engine_key(trained) == engine_key(base) and engine_differences(trained, base) == []
    assert (Path(trained.path) / "chat_template.jinja").read_bytes() == (Path(base.path) / "chat_template.jinja").read_bytes()
    assert keep_base_engine_files(base.path, trained.path) == []  # already the base's

    resized = _copy(tiny_model, tmp_path / "resized", lambda f: (saved_by_sft(f), _update(f / "config.json", vocab_size=1024)))
    before = engine_key(resized)
    assert keep_base_engine_files(base.path, resized.path) == [] and engine_key(resized) == before
    assert keep_base_engine_files("HuggingFaceTB/SmolLM2-135M-Instruct", trained.path) == []  # a hub id: no files to take
