"""A stand-in for trace_assets.generation.vllm_worker in tests of the process handling around it.

Speaks the worker's protocol, single- and multi-model jobs; each completion's text names the cards
it ran on and the model it came from. A model named ``crash-after-one`` makes an engine that holds
request ``b`` die after its first completion of that model.
"""

import json
import os
import sys

from trace_assets.generation.vllm_worker import RESULT_PREFIX


def emit(payload: dict) -> None:
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


def main(path: str) -> None:
    with open(path) as handle:
        job = json.load(handle)
    multi = "models" in job
    models = job["models"] if multi else [{"model": job["model"], "sampling": job["sampling"], "requests": job["requests"]}]
    print("INFO a vLLM-style log line", flush=True)
    emit({"event": "ready", "startup_s": 0.01})
    for index, model in enumerate(models):
        tag = {"model": model.get("tag", index)} if multi else {}
        if multi:
            swapped = index > 0 and model["model"]["path"] != models[index - 1]["model"]["path"]
            emit({"event": "model", **tag, "path": model["model"]["path"], "swapped": swapped, "swap_s": 0.001 * swapped})
        keys = [r["key"] for r in model["requests"]]
        crash = model["model"]["name"] == "crash-after-one" and "b" in keys
        for number, key in enumerate(keys):
            for sample in range(model["sampling"]["n"]):
                emit(
                    {
                        "event": "completion",
                        **tag,
                        "key": key,
                        "sample_index": sample,
                        "text": f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES', '')} model={model['model']['name']}",
                        "finish_reason": "stop",
                        "prompt_tokens": 3,
                        "output_tokens": 2,
                    }
                )
            emit({"event": "chunk", **tag, "generate_s": 0.01, "requests": 1})
            if crash and number == 0:
                sys.exit(3)
    emit({"event": "done"})


if __name__ == "__main__":
    main(sys.argv[1])
