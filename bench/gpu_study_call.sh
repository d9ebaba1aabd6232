#!/usr/bin/env bash
# One device call of the GPU study (issue 24), after the pieces are in /tmp/parts (README's GPU section):
#   bash bench/gpu_study_call.sh SECONDS [run options...]
# installs the offline wheels once (kept in /tmp/site while the machine stays warm), runs the study for
# at most SECONDS (stage by stage, resumable: call again with the same options), and always exports the
# tables so far to $OUT/tables_<time>/: with SECONDS below the device time left (less ~30 s for the
# export), a run cut off by its limit still brings back what the last finished stage wrote. The export
# holds the generation cache too ($OUT/tables_<time>/generation_cache/part-NNN.parquet); with
# GPU_STUDY_CACHE="DIR [DIR...]" (folders of such parts, carried into the call) the run loads them
# before its first stage, so a session on a fresh machine starts from an earlier one's traces and
# verdicts (docs/gpu-study.md). Prints the stage lines of the run's log.
set -u
limit=${1:?seconds}; shift
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
data=${GPU_STUDY_DATA:-/tmp/gpu_study}
[ -d /tmp/site/vllm ] || bash scripts/offline_gpu/install-pieces.sh /tmp/parts /tmp/site > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
# the GPU's busy share over the run (issue 25): nvidia-smi's utilization.gpu is the share of each
# sample period in which a kernel ran; sampled every second, with the time, for the study's wall time
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 >> /tmp/gpu_util.csv 2>/dev/null &
sampler=$!
# shellcheck disable=SC2086  # GPU_STUDY_CACHE: one or more folders
# --budget-s: stop before a stage whose estimate no longer fits, rather than lose it to the timeout
timeout "$limit" python bench/gpu_study.py run --data "$data" --budget-s $((limit - 15)) ${GPU_STUDY_CACHE:+--cache-from $GPU_STUDY_CACHE} "$@" >> /tmp/gpu_study.log 2>&1
status=$?
kill $sampler 2>/dev/null
out="${OUT:-/tmp/out}/tables_$(date +%H%M%S)"
python bench/gpu_study.py export --data "$data" --out "$out" > /tmp/export.log 2>&1 && cp /tmp/gpu_study.log /tmp/gpu_util.csv "$out/"
grep -E "^[a-z_, ]+(\.\.\.|: [0-9]+ s|: done)|^loop:|rows loaded|stopping|complete|Traceback|Error|error:" /tmp/gpu_study.log | tail -20
grep -E "^generation_cache:|Error" /tmp/export.log
echo "run exit $status; tables in $out"
