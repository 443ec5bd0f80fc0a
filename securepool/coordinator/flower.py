"""The coordinator inside Flower's ServerApp (``runtime = "flower"``).

``flwr run`` starts the ServerApp (securepool/runtime/flower_app.py), which builds a
:class:`~securepool.runtime.flower.FlowerDriver` over the SuperLink and calls
:func:`run_pool` with the run config's ``coordinator-args``:

* ``"run CONFIG OUT"``: a fresh run of the config file CONFIG into the new directory OUT
  (the same run directory, checkpoints and summary as ``securepool run``);
* ``"resume OUT"``: verify OUT against its manifest and continue from its last committed
  iteration (after the coordinator's process was killed): the nodes keep their own keys,
  ledgers and beacon / SecAgg+ history, so an old iteration cannot be replayed to them.

Paths are taken as given: the ServerApp's working directory is Flower's, so use absolute
paths. A bad argument or config raises ConfigError (every problem at once) before OUT is
written.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from crypto.errors import ConfigError
from securepool.coordinator.records import IterationRecord
from securepool.runtime.driver import Driver


def parse_args(args: str) -> tuple[str, Path | None, Path]:
    """("run", CONFIG, OUT) or ("resume", None, OUT); ConfigError otherwise."""
    words = shlex.split(args)
    if len(words) == 3 and words[0] == "run":
        return "run", Path(words[1]), Path(words[2])
    if len(words) == 2 and words[0] == "resume":
        return "resume", None, Path(words[1])
    raise ConfigError([f"coordinator-args must be 'run CONFIG OUT' or 'resume OUT', got {args!r}"])


def run_pool(driver: Driver, args: str) -> dict[str, Any]:
    """Run (or resume) the pool over ``driver``; returns the run's summary."""
    from securepool.runner import resume_job, start_job

    action, config, out = parse_args(args)

    def show(record: IterationRecord) -> None:  # `flwr log RUN_ID --stream` shows it
        print("\n".join(record.lines()), flush=True)

    if action == "run":
        assert config is not None
        summary = start_job(config, out, driver=driver, on_iteration=show)
    else:
        summary = resume_job(out, driver=driver, on_iteration=show)
    print(json.dumps({"securepool": "done", "out": str(out), "stop": summary.get("stop_reason")}))
    return summary
