"""Issue 22, item 5: the unboosted backdoor with its trigger moved onto pixels honest
digits use, against ``[defence] prune`` (the adaptive attacker: it knows the rule and,
from its own records, which pixels clean data uses, and avoids the cut ones).

A scratch wrapper, not an ``[attack]`` option: it replaces the attack's trigger pixels
(:data:`securepool.attacks.TRIGGER_PIXELS`, read by the attacker node when it poisons its
records and by the runner when it measures the trigger's success) for the whole process,
then runs ``benchmarks/trust_sweep.py`` with the remaining arguments. The default runtime
runs every node in this process, so the attacker nodes and the measurement see the same
trigger.

    .venv/bin/python benchmarks/prune_adaptive.py --pixels 2,3,10,11 -- --modes plaintext ...
"""

from __future__ import annotations

import argparse
import sys

import trust_sweep  # benchmarks/trust_sweep.py: this script's directory is on sys.path

import securepool.attacks as attacks


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pixels", default="2,3,10,11", help="flattened 8x8 pixel indices")
    args, rest = p.parse_known_args()
    pixels = tuple(int(i) for i in args.pixels.split(","))
    if not pixels or not all(0 <= i < 64 for i in pixels):
        raise SystemExit(f"--pixels must be indices 0..63, got {args.pixels!r}")
    attacks.TRIGGER_PIXELS = pixels
    sys.argv = [sys.argv[0], *(a for a in rest if a != "--")]
    trust_sweep.main()


if __name__ == "__main__":
    main()
