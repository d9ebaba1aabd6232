"""A stand-in for trace_assets.generation.vllm_worker in tests of the process handling around it.

Speaks the worker's protocol: jobs one per line on stdin, single- and multi-model, ``ready`` on
the first job and ``reused`` on later ones, ``done`` after each, exit at the end of its input;
``{"command": "sleep"}`` answers ``slept``, and the next job ``woke`` first. Each
completion's text names the cards it ran on, the model it came from and the worker's process id.
A model named ``crash-after-one`` makes an engine that holds request ``b`` die after its first
completion of that model. ``SCRIPTED_WORKER_LOG``, if set, names a file that gets a line per
started worker (its pid) and per finished worker ("exit <pid>").
"""

import json
import os
import sys

from trace_assets.generation.vllm_worker import RESULT_PREFIX


def emit(payload: dict) -> None:
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


def note(line: str) -> None:
    if os.environ.get("SCRIPTED_WORKER_LOG"):
        with open(os.environ["SCRIPTED_WORKER_LOG"], "a") as handle:
            handle.write(line + "\n")


def serve_job(job: dict) -> None:
    multi = "models" in job
    models = job["models"] if multi else [{"model": job["model"], "sampling": job["sampling"], "requests": job["requests"]}]
    for index, model in enumerate(models):
        tag = {"model": model.get("tag", index)} if multi else {}
        if multi:
            swapped = index > 0 and model["model"]["path"] != models[index - 1]["model"]["path"]
            emit({"event": "model", **tag, "path": model["model"]["path"], "swapped": swapped, "swap_s": 0.001 * swapped})
        keys = [r["key"] for r in model["requests"]]
        crash = model["model"]["name"] == "crash-after-one" and "b" in keys
        for number, key in enumerate(keys):
            for sample in range(model["sampling"]["n"]):
                text = f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES', '')} model={model['model']['name']} pid={os.getpid()}"
                emit(
                    {
                        "event": "completion",
                        **tag,
                        "key": key,
                        "sample_index": sample,
                        "text": text,
                        "finish_reason": "stop",
                        "prompt_tokens": 3,
                        "output_tokens": 2,
                    }
                )
            emit({"event": "chunk", **tag, "generate_s": 0.01, "requests": 1})
            if crash and number == 0:
                sys.exit(3)
    emit({"event": "done"})


def main() -> None:
    note(str(os.getpid()))
    print("INFO a vLLM-style log line", flush=True)
    key, asleep, served = None, False, 0
    for line in sys.stdin:
        job = json.loads(line)
        if job.get("command") == "sleep":
            asleep = key is not None
            emit({"event": "slept", "sleep_s": 0.001})
            continue
        if asleep:
            asleep = False
            emit({"event": "woke", "wake_s": 0.002})
        served += 1
        if served == 1:
            key = job["engine_key"]
            emit({"event": "ready", "startup_s": 0.01})
        else:
            assert job["engine_key"] == key, "a job for another engine key"
            emit({"event": "reused", "age_s": 0.1, "jobs": served - 1})
        serve_job(job)
    note(f"exit {os.getpid()}")


if __name__ == "__main__":
    main()
