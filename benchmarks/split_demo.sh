#!/usr/bin/env bash
# Digits demo wall time: the code before the role split (BEFORE=dir of an export of the
# parent commit), after it in-process, and multiprocess (one OS process per participant),
# interleaved, 3 rounds, with the load before each run. Usage, from the repo root:
#   git archive 5c42997 | tar -x -C /tmp/split-before
#   BEFORE=/tmp/split-before benchmarks/split_demo.sh > /tmp/split_demo.log 2>&1
set -u
PY=${PY:-/work/main/.venv/bin/python}
OUT=${OUT:-/tmp/split-demo-runs}
rm -rf "$OUT"; mkdir -p "$OUT"
sed 's/^seed = 7$/seed = 7\nruntime = "multiprocess"/' examples/digits.toml > "$OUT/digits-mp.toml"
one() {  # label dir config
  echo "load: $(uptime)"
  local start end
  start=$(date +%s.%N)
  (cd "$2" && PYTHONPATH="$2" "$PY" -m securepool.cli run "$3" --out "$OUT/$1-$i" --quiet > /dev/null)
  end=$(date +%s.%N)
  "$PY" -c "import json,sys; s=json.load(open('$OUT/$1-$i/summary.json')); print('$1', 'wall_s', round($end-$start,2), 'iterations', s['iterations'], 'best_accuracy', round(s['best_accuracy'],4), 'converged', s['converged'])"
}
for i in 1 2 3; do
  one before "$BEFORE" "$BEFORE/examples/digits.toml"
  one inprocess "$PWD" "$PWD/examples/digits.toml"
  one multiprocess "$PWD" "$OUT/digits-mp.toml"
done
