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
#
# GPU_STUDY_DETACH=1: one process for the whole run, across calls. The run starts in a process session
# of its own (setsid), which the device machine lets run on after the call returns, while it stays warm;
# each call (the first included) waits on it for at most SECONDS, and the next call, the same command,
# waits on the same process instead of starting one. The run's sleeping engines then serve every stage
# (one engine start per model, as dry-run assumes), where a run split into processes starts its engines
# again in each. It has no budget: the tables are exported once it ends (DuckDB admits one writer), so a
# machine taken back mid-run loses the run; give it a call per ~10 minutes until it says it is done.
set -u
limit=${1:?seconds}; shift
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
data=${GPU_STUDY_DATA:-/tmp/gpu_study}
[ -d /tmp/site/vllm ] || bash scripts/offline_gpu/install-pieces.sh /tmp/parts /tmp/site > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }

run_with_sampler() {  # the study, with the GPU's busy share over it (issue 25): nvidia-smi's utilization.gpu
  # is the share of each sample period in which a kernel ran; sampled every second, with the time
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 >> /tmp/gpu_util.csv 2>/dev/null &
  local sampler=$! status
  # shellcheck disable=SC2086  # GPU_STUDY_CACHE: one or more folders
  "$@" python bench/gpu_study.py run --data "$data" ${GPU_STUDY_CACHE:+--cache-from $GPU_STUDY_CACHE} "${options[@]}" >> /tmp/gpu_study.log 2>&1
  status=$?
  kill $sampler 2>/dev/null
  return $status
}

stage_lines() {  # the run's log, its stage lines (and errors) only
  grep -E "^[a-z_, ]+(\.\.\.|: [0-9]+ s|: done)|^loop:|rows loaded|stopping|complete|Traceback|Error|error:" /tmp/gpu_study.log | tail -20
}

options=("$@")
if [ "${GPU_STUDY_CHILD:-}" = 1 ]; then  # the detached run itself (below)
  echo $$ > /tmp/gpu_study.pid  # its own id: setsid may have forked
  run_with_sampler
  echo $? > /tmp/gpu_study.rc
  exit 0
fi
if [ -n "${GPU_STUDY_DETACH:-}" ]; then
  pid=$(cat /tmp/gpu_study.pid 2>/dev/null)
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    if [ -n "$pid" ] && [ -f /tmp/gpu_study.rc ]; then
      echo "the detached run has ended (exit $(cat /tmp/gpu_study.rc)); exporting again"
    else
      rm -f /tmp/gpu_study.rc /tmp/gpu_study.pid
      GPU_STUDY_CHILD=1 setsid bash "$0" "$limit" "$@" < /dev/null > /dev/null 2>&1 &
      for _ in $(seq 100); do [ -s /tmp/gpu_study.pid ] && break; sleep 0.1; done
      pid=$(cat /tmp/gpu_study.pid 2>/dev/null)
      [ -n "$pid" ] || { echo "the detached run did not start"; exit 1; }
      echo "detached run started (process $pid)"
    fi
  else
    echo "waiting on the detached run (process $pid)"
  fi
  deadline=$((SECONDS + limit))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt "$deadline" ]; do sleep 5; done
  if kill -0 "$pid" 2>/dev/null; then
    stage_lines
    echo "still running (process $pid): call again with the same command to wait on it"
    exit 0
  fi
  status=$(cat /tmp/gpu_study.rc 2>/dev/null || echo 1)
else
  # --budget-s: stop before a stage whose estimate no longer fits, rather than lose it to the timeout
  options+=(--budget-s $((limit - 15)))
  run_with_sampler timeout "$limit"
  status=$?
fi
out="${OUT:-/tmp/out}/tables_$(date +%H%M%S)"
python bench/gpu_study.py export --data "$data" --out "$out" > /tmp/export.log 2>&1 && cp /tmp/gpu_study.log /tmp/gpu_util.csv "$out/"
stage_lines
grep -E "^generation_cache:|Error" /tmp/export.log
echo "run exit $status; tables in $out"
