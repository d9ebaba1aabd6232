"""A stand-in for trace_assets.generation.vllm_worker in tests of the process handling around it.

Speaks the worker's protocol; each completion's text names the cards it ran on. A model named
``crash-after-one`` makes an engine that holds request ``b`` die after its first completion.
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
    print("INFO a vLLM-style log line", flush=True)
    emit({"event": "ready", "startup_s": 0.01})
    keys = [r["key"] for r in job["requests"]]
    crash = job["model"]["name"] == "crash-after-one" and "b" in keys
    for number, key in enumerate(keys):
        for sample in range(job["sampling"]["n"]):
            emit({"event": "completion", "key": key, "sample_index": sample,
                  "text": f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", "finish_reason": "stop",
                  "prompt_tokens": 3, "output_tokens": 2})
        emit({"event": "chunk", "generate_s": 0.01, "requests": 1})
        if crash and number == 0:
            sys.exit(3)
    emit({"event": "done"})


if __name__ == "__main__":
    main(sys.argv[1])
