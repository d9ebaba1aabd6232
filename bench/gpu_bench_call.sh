#!/usr/bin/env bash
# One device call of a GPU benchmark section (issue 25), after the pieces are in /tmp/parts (README's GPU section):
#   bash bench/gpu_bench_call.sh SECTION [bench/gpu.py options...]     # SECTION: generation, eval, sft or sleep
# installs the offline wheels once (kept in /tmp/site while the machine stays warm), builds SmolLM2-135M-Instruct's
# folder from its GGUF once (its tokenizer is the sections' --tokenizer; the sleep and generation sections use its
# weights too), and runs the section with $OUT/gpu.json, a copy of the committed bench/results/gpu.json, as its
# output: the file that comes back is the committed one with the section's figures merged in. Copy it over
# bench/results/gpu.json before the next call, so that call merges into it (generation --models random, then
# --models smollm2, keep each other's figures). The log keeps a "bench: ... done in N s" line per part, so a
# call cut off by its limit still tells how far it got (docs/benchmarks.md has the calls and their times).
set -u -o pipefail
section=${1:?section}; shift
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
[ -d /tmp/site/vllm ] || bash scripts/offline_gpu/install-pieces.sh /tmp/parts /tmp/site > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
work=${GPU_BENCH_WORK:-/tmp/bench-gpu}
out=${OUT:-/tmp/out}
mkdir -p "$work" "$out"
model=$(python -c "from pathlib import Path; from trace_assets.models import LOCAL_PREFIX, SMOLLM2, resolve_model; print(resolve_model(LOCAL_PREFIX + SMOLLM2, Path('$work') / 'models'))" 2>/tmp/build.log | tail -1) || { tail -20 /tmp/build.log; exit 1; }
[ -f "$out/gpu.json" ] || cp bench/results/gpu.json "$out/gpu.json"
python bench/gpu.py "$section" --tokenizer "$model" --work "$work" --output "$out/gpu.json" "$@" > "$out/$section.log" 2>&1
status=$?
grep -vE "it/s\]|s/it\]" "$out/$section.log" | tail -30
echo "bench/gpu.py $section exit $status; figures in $out/gpu.json, log in $out/$section.log"
exit $status
