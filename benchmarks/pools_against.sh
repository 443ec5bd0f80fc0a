#!/bin/bash
# Honest runs unchanged: the seeded digits demo (assignment.beacon = "seeded-insecure",
# 2 iterations) in mask and HE mode from this tree and, twice (the run-to-run spread),
# from BASE (e.g. a `git worktree add ../base <commit>`); prints per mode whether every
# joint seed matched and the largest difference between the final pools.
#   benchmarks/pools_against.sh ../base
set -euo pipefail
BASE=$(cd "${1:?usage: pools_against.sh BASE_TREE}" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY="$HERE/.venv/bin/python"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for mode in mask he; do
  sed -e 's/^min_models = 1/min_models = 1\nbeacon = "seeded-insecure"/' \
      -e 's/^max_iterations = 40/max_iterations = 2/' \
      -e "s/^mode = \"mask\" /mode = \"$mode\" /" "$HERE/examples/digits.toml" > "$OUT/$mode.toml"
  for tag in base base2 here; do
    tree=$BASE; [ $tag = here ] && tree=$HERE
    PYTHONPATH=$tree "$PY" -c "
import sys; from pathlib import Path; from securepool.runner import start_job
start_job(Path(sys.argv[1]), Path(sys.argv[2]))" "$OUT/$mode.toml" "$OUT/$mode-$tag" > /dev/null 2>&1
  done
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1])
for mode in ("mask", "he"):
    runs = {t: out / f"{mode}-{t}" for t in ("base", "base2", "here")}
    g = {t: np.load(p / "checkpoint" / "globals.npz") for t, p in runs.items()}
    seeds = {t: [json.loads(x)["joint_seed"] for x in (p / "metrics.jsonl").read_text().splitlines()]
             for t, p in runs.items()}
    def diff(a, b):
        return max(float(np.max(np.abs(g[a][k] - g[b][k]))) for k in g[a].files)
    print(json.dumps({
        "mode": mode,
        "joint_seeds_equal": seeds["base"] == seeds["here"] == seeds["base2"],
        "max_abs_diff_here_vs_base": diff("here", "base"),
        "max_abs_diff_base_vs_base": diff("base2", "base"),
        "max_abs_param": max(float(np.max(np.abs(g["base"][k]))) for k in g["base"].files),
    }))
PYEOF
