#!/usr/bin/env bash
# Whole default pipeline, wall clock: `dvc repro` from scratch on a clean clone of each given revision, one after
# another on the same machine, with the same .venv (same pins) and the same data. Prints seconds and accuracies,
# then each revision's per-stage seconds (from the time stamp of every "Running stage" line of its log).
#   benchmarks/bench_pipeline.sh BEFORE_REV AFTER_REV        (default: HEAD)
# Each clone imports its own code (PYTHONPATH), so an older revision is measured with its own implementation.
# The clones stay under the printed directory: the after-clone's outputs are a fresh-clone `dvc repro`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
work=$(mktemp -d /tmp/bench-pipeline.XXXXXX)
revs=("${@:-HEAD}")
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
printf '%-12s %10s %8s %8s %8s\n' revision seconds dense decomp basisn
for rev in "${revs[@]}"; do
  clone=$work/$rev
  git clone -q "$repo" "$clone"
  git -C "$clone" checkout -q "$rev"
  mkdir -p "$clone/data" && cp -r "$repo/data/raw" "$clone/data/raw"
  start=$(date +%s.%N)
  (cd "$clone" && PYTHONPATH=$clone PATH=$venv/bin:$PATH dvc repro 2>&1 | stamp >"$work/$rev.log"; exit "${PIPESTATUS[0]}") \
    || { echo "$rev: dvc repro failed, see $work/$rev.log"; exit 1; }
  end=$(date +%s.%N)
  seconds=$("$venv/bin/python" -c "print($end - $start)")
  echo "$end END" >>"$work/$rev.log"
  "$venv/bin/python" - "$clone/outputs/evaluate/metrics.json" "$rev" "$seconds" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<12} {float(sys.argv[3]):>10.1f} {m['dense_accuracy']:>8.4f} {m['decomposed_accuracy']:>8.4f} {m['basisn_accuracy']:>8.4f}")
PY
done
for rev in "${revs[@]}"; do
  "$venv/bin/python" - "$work/$rev.log" "$rev" <<'PY'
import re, sys
marks = []
for line in open(sys.argv[1]):
    stamp, _, text = line.partition(" ")
    found = re.match(r"Running stage '([^']+)'", text)
    if found or text.strip() == "END":
        marks.append((float(stamp), found.group(1) if found else None))
stages = [f"{name} {end - start:.0f}" for (start, name), (end, _) in zip(marks, marks[1:])]
print(f"{sys.argv[2]} per stage (s): " + ", ".join(stages))
PY
done
echo "logs and clones: $work"
