#!/bin/bash
# Issue 13's trust measurements, re-runnable after the HE / mask binding lands:
#   bash benchmarks/trust_issue13.sh [SEEDS] [OUT_DIR]     (from the repo root)
# 1. no attacker, trust on (every mark is a false positive): plaintext, mask, HE; IID and
#    Dirichlet 0.5; SEEDS (default 7,8,9,10,11) run seeds, 15 iterations, 20 participants
# 2. the attacks behind an honest-looking summary (scaling_cover, backdoor_cover, kernel):
#    clean, undefended and defended, IID, 20 participants, 4 attackers, every mode
# Writes OUT_DIR/trust_issue13_fpr.json and OUT_DIR/trust_issue13_attacks.json (default
# benchmarks/), with `uptime` before and after each sweep and its wall time on stderr;
# render with `python benchmarks/trust_table.py --median FILE`.
set -euo pipefail
seeds=${1:-7,8,9,10,11}; out=${2:-benchmarks}
py=${PYTHON:-python}
sweep() {
  local name=$1; shift
  echo "[$name] start $(date -u +%FT%TZ) load: $(uptime | sed 's/.*load average: //')" >&2
  local t0=$SECONDS
  "$py" benchmarks/trust_sweep.py "$@" --out "$out/trust_issue13_$name.json" >/dev/null
  echo "[$name] done in $((SECONDS - t0)) s, load: $(uptime | sed 's/.*load average: //')" >&2
}
sweep fpr --modes plaintext,mask,he --partitions iid,dirichlet --no-clean --clean-defended \
  --attacks "" --seeds "$seeds"
sweep attacks --modes plaintext,mask,he --partitions iid --attacks cover --seeds "$seeds"
