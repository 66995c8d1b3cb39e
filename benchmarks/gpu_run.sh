#!/usr/bin/env bash
# The one GPU check, from the root of a bare copy of the tree with `.gpu/` beside it (benchmarks/gpu_carry.py):
#   bash benchmarks/gpu_run.sh                  # on the GPU machine; results in $OUT (default /tmp/gpu-out)
#   SMOKE=1 bash benchmarks/gpu_run.sh          # the same steps at a tiny shape on the CPU (the tests run it)
# Each shape runs in its own process with its own time limit, 135m first (a quick end-to-end check), so one
# failure or overrun loses nothing else; gpu.py writes its JSON after every stage. Budget: under 5 minutes on one
# H100 for the three shapes (not yet measured on a GPU).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$PWD:$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
export TOOLKIT_CACHE_DIR="${TOOLKIT_CACHE_DIR:-$(mktemp -d /tmp/tkc.XXXXXX)}"   # no cache travels
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
if [ "${SMOKE:-0}" = 1 ]; then runs="tiny:120"; extra="--smoke"; else runs="135m:60 8b:150 1.7b:90"; extra=""; fi
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee -a "$OUT/log.txt"
status=0
for run in $runs; do
  shape=${run%:*}; limit=${run#*:}
  echo "=== $shape (limit ${limit} s) $(date +%T)" | tee -a "$OUT/log.txt"
  timeout "$limit" python3 benchmarks/gpu.py $extra --shapes "$shape" --json "$OUT/$shape.json" 2>&1 \
    | grep -v 'it/s\]' | tee -a "$OUT/log.txt"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "=== $shape ended with exit $rc (124: its time limit); its JSON holds the stages it finished" | tee -a "$OUT/log.txt"; status=1; }
done
exit $status
