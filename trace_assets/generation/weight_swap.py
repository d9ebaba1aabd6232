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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from trace_assets.generation.types import ModelSpec

WORKER_EXTENSION = "trace_assets.generation.weight_swap.WeightSwapExtension"

# Fields of the JSON files below that don't change what the engine computes: where a file was
# loaded from and how (transformers adds these on a re-save), and the weights' own dtype (the
# engine's is spec.dtype).
_CONFIG_BOOKKEEPING = {
    "_name_or_path",
    "name_or_path",
    "_commit_hash",
    "transformers_version",
    "is_local",
    "local_files_only",
    "torch_dtype",
    "dtype",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
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


def _without_bookkeeping(value):
    if isinstance(value, dict):
        return {k: _without_bookkeeping(v) for k, v in value.items() if k not in _CONFIG_BOOKKEEPING}
    return value


def engine_key(spec: ModelSpec) -> str:
    """Checkpoints with equal keys can be served by one engine, loading each one's weights in turn.

    A hub id (no local folder) only shares with itself.
    """
    engine = {
        "backend": spec.backend,
        "dtype": spec.dtype,
        "max_model_len": spec.max_model_len,
        "tp": spec.tensor_parallel_size,
        "dp": spec.data_parallel_size,
    }
    folder = Path(spec.path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        return hashlib.sha256(json.dumps({**engine, "path": spec.path}, sort_keys=True).encode()).hexdigest()[:16]
    digest = hashlib.sha256(json.dumps(engine, sort_keys=True).encode())
    digest.update(json.dumps(_without_bookkeeping(json.loads(config_file.read_text())), sort_keys=True).encode())
    for name in _ENGINE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        digest.update(name.encode())
        if name.endswith(".json") and name != "tokenizer.json":
            digest.update(json.dumps(_without_bookkeeping(json.loads(path.read_text())), sort_keys=True).encode())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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
