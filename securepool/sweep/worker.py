"""The sweep's worker processes: each runs whole jobs with ``securepool.runner.start_job``.

Workers are started with the ``spawn`` context (a fresh interpreter: no torch or
OpenSSL state forked from the parent), get the progress queue once through
:func:`init_worker`, and report through it as plain tuples:
``("start", name, max_iterations)``, ``("iteration", name, i)``, ``("done", name, None)``,
``("failed", name, message)``.
"""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path
from typing import Any

_QUEUE: Any = None


def init_worker(queue: Any) -> None:
    """Pool initializer: keep the parent's progress queue for :func:`run_one`, and warm up.

    The first optimiser step of a fresh process costs seconds of one-time set-up in
    torch (measured ~2.6 s on the project machine); without the warm-up that lands in
    the wall time of whichever run a worker happens to start with.
    """
    global _QUEUE
    _QUEUE = queue
    import torch

    import securepool.runner  # noqa: F401  (the imports a run needs, before timing)

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    model(torch.zeros(1, 2)).sum().backward()
    opt.step()


def run_one(job: tuple[str, str, str]) -> tuple[str, str | None]:
    """Run one job ``(name, config_path, run_dir)``; return (name, error or None).

    A run directory left by an interrupted attempt is removed first: a run is redone
    from scratch, never resumed half-way inside a sweep.
    """
    name, config_path, run_dir = job
    queue = _QUEUE
    out = Path(run_dir)
    try:
        from securepool.config import load_config
        from securepool.runner import start_job

        if out.exists():
            shutil.rmtree(out)
        cfg = load_config(Path(config_path))
        queue.put(("start", name, cfg.convergence.max_iterations))
        start_job(
            Path(config_path),
            out,
            on_iteration=lambda r: queue.put(("iteration", name, r.iteration)),
        )
    except Exception as exc:  # a failed run is reported and redone next time
        message = f"{type(exc).__name__}: {exc}"
        (out.parent / f".{name}.error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        queue.put(("failed", name, message))
        return name, message
    (out.parent / f".{name}.error.txt").unlink(missing_ok=True)  # an earlier failure
    queue.put(("done", name, None))
    return name, None
