#!/usr/bin/env bash
# `make test` from a fresh clone, RUNS times in a row, while another process holds HOLD_GIB of memory
# (issue: no flaky tests; vLLM-CPU's KV cache is sized in bytes, not as a share of free memory).
#   scripts/fresh_clone_runs.sh [RUNS] [HOLD_GIB] [OUT_JSON]
# Clones the committed HEAD of this checkout each time and runs .ci/run (what CI runs) in the clone.
set -uo pipefail
runs=${1:-3}
hold=${2:-8}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${3:-$here/bench/results/fresh_clone_runs.json}
work=$(mktemp -d /tmp/fresh-clone-runs.XXXXXX)
python3 - "$hold" <<'PY' &
import sys, time
buf = bytearray(int(sys.argv[1]) << 30)
buf[::4096] = b"\x01" * len(range(0, len(buf), 4096))  # touch every page: resident, not just reserved
print(f"holding {len(buf) >> 30} GiB", flush=True)
time.sleep(1e6)
PY
holder=$!
trap 'kill $holder 2>/dev/null; rm -rf "$work"' EXIT
sleep 20
results=()
for i in $(seq 1 "$runs"); do
  clone="$work/run$i"
  git clone -q "$here" "$clone"
  available=$(awk '/MemAvailable/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
  started=$(date +%s)
  (cd "$clone" && bash .ci/run) > "$work/run$i.log" 2>&1
  rc=$?
  seconds=$(( $(date +%s) - started ))
  summary=$(grep -E "^[0-9]+ passed|passed|failed" "$work/run$i.log" | tail -1)
  echo "run $i: rc=$rc ${seconds}s, ${available} GiB available at start: $summary"
  [ $rc -ne 0 ] && tail -40 "$work/run$i.log"
  results+=("{\"run\": $i, \"rc\": $rc, \"seconds\": $seconds, \"mem_available_gib_at_start\": $available, \"pytest\": \"$summary\"}")
  rm -rf "$clone"
done
commit=$(git -C "$here" rev-parse --short HEAD)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
printf '{\n  "command": "scripts/fresh_clone_runs.sh %s %s",\n  "commit": "%s",\n  "device": "cpu: %s (%s cores, %s GiB)",\n  "held_gib": %s,\n  "runs": [\n    %s\n  ]\n}\n' \
  "$runs" "$hold" "$commit" "$cpu" "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$hold" \
  "$(IFS=,; echo "${results[*]}" | sed 's/},{/},\n    {/g')" > "$out"
cat "$out"
