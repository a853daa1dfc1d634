#!/usr/bin/env bash
# Whole default pipeline, wall clock: `dvc repro` from scratch on a clean clone of each given revision, one after
# another on the same machine, with the same .venv (same pins) and the same data. Prints seconds and accuracies.
#   benchmarks/bench_pipeline.sh BEFORE_REV AFTER_REV        (default: HEAD)
# Each clone imports its own code (PYTHONPATH), so an older revision is measured with its own implementation.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
work=$(mktemp -d /tmp/bench-pipeline.XXXXXX)
revs=("${@:-HEAD}")
printf '%-12s %10s %8s %8s %8s\n' revision seconds dense decomp basisn
for rev in "${revs[@]}"; do
  clone=$work/$rev
  git clone -q "$repo" "$clone"
  git -C "$clone" checkout -q "$rev"
  mkdir -p "$clone/data" && cp -r "$repo/data/raw" "$clone/data/raw"
  start=$(date +%s.%N)
  (cd "$clone" && PYTHONPATH=$clone PATH=$venv/bin:$PATH dvc repro >"$work/$rev.log" 2>&1) \
    || { echo "$rev: dvc repro failed, see $work/$rev.log"; exit 1; }
  seconds=$("$venv/bin/python" -c "print($(date +%s.%N) - $start)")
  "$venv/bin/python" - "$clone/outputs/evaluate/metrics.json" "$rev" "$seconds" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<12} {float(sys.argv[3]):>10.1f} {m['dense_accuracy']:>8.4f} {m['decomposed_accuracy']:>8.4f} {m['basisn_accuracy']:>8.4f}")
PY
done
echo "logs and clones: $work"
