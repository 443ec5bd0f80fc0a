#!/bin/bash
# Interleaved before/after of `securepool bench secagg` on the same machine load.
#   bash benchmarks/secagg_before_after.sh BASE_COMMIT [ROUNDS]   (from the repo root)
# Extracts BASE_COMMIT with `git archive` to a temporary tree, then alternates a run of
# the old tree and of the working tree ROUNDS times, printing one JSON line per run
# with the tree, the round, `uptime`'s load averages and the bench's JSON output.
set -euo pipefail
base=${1:?base commit}; rounds=${2:-3}
py=${PYTHON:-python}
here=$(pwd); old=$(mktemp -d); trap 'rm -rf "$old"' EXIT
git archive "$base" | tar -x -C "$old"
for round in $(seq 1 "$rounds"); do
  for tree in "$old" "$here"; do
    load=$(uptime | sed 's/.*load average: //')
    result=$(cd "$tree" && PYTHONPATH="$tree" "$py" -m securepool.cli bench secagg \
      --n 100 --d 100000 --dropout 0.1 --repeats 3 --json | tr -d '\n ')
    label=$([ "$tree" = "$here" ] && echo after || echo "before:$base")
    echo "{\"tree\":\"$label\",\"round\":$round,\"load\":\"$load\",\"result\":$result}"
  done
done
