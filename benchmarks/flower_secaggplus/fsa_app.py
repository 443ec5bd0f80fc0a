"""Flower 1.42's SecAggPlusWorkflow as an app: the side of benchmarks/flower_deploy_compare.py.

ServerApp: waits for ``nodes`` nodes, then ``rounds`` rounds of DefaultWorkflow with
``SecAggPlusWorkflow`` as the fit workflow (FedAvg, every node sampled, no evaluation
round), initial parameters from the same model constructor SecurePool uses. The Grid is
wrapped by :class:`CountingGrid`, which counts the serialized RecordDict bytes of every
message to and from each node and appends one line per stage to ``progress.jsonl`` (the
benchmark uses it to SIGKILL a node at a chosen stage). ``rounds.json`` holds each
round's wall time, whether it completed and the bytes per node.

ClientApp (with ``secaggplus_mod``): fit loads the parameters into the pool config's
first model, trains it with SecurePool's PlainTrainer on the node's built-in digits
partition (node config ``node-id``, the same split a SecurePool node trains on) and
returns the weights and sample count. The pool config is the node config's ``config``,
or the run config's on a relay SuperNode (whose node config names only its socket).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, ndarrays_to_parameters
from flwr.common.serde import recorddict_to_proto
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow


def _pool_config(path: str) -> Any:
    from securepool.config import parse_config, parse_toml, read_config_text

    return parse_config(parse_toml(read_config_text(Path(path)), Path(path)))


def _model(cfg: Any) -> Any:
    from securepool.models import build_model

    spec = cfg.pool.models[0]
    n_features, n_classes = cfg.data.dataset.shape
    return build_model(
        spec.arch, n_features=n_features, n_classes=n_classes, seed=spec.seed, hidden=spec.hidden
    )


def _size(content: Any) -> int:
    return int(recorddict_to_proto(content).ByteSize())


class CountingGrid:
    """A Grid that counts message bytes per node and logs every stage it sends."""

    def __init__(self, grid: Any, progress: Path) -> None:
        self._grid = grid
        self._progress = progress
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def _log(self, **fields: Any) -> None:
        with self._progress.open("a") as f:
            f.write(json.dumps({"t": time.time(), **fields}) + "\n")

    def _count_out(self, messages: list[Any]) -> None:
        for m in messages:
            dst = m.metadata.dst_node_id
            self.sent[dst] = self.sent.get(dst, 0) + _size(m.content)

    def _count_in(self, replies: list[Any]) -> None:
        for r in replies:
            if r.has_content():
                src = r.metadata.src_node_id
                self.received[src] = self.received.get(src, 0) + _size(r.content)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        self.calls += 1
        kinds = sorted({m.metadata.message_type for m in messages})
        self._log(event="send", call=self.calls, nodes=len(messages), types=kinds)
        self._count_out(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self._count_in(replies)
        errors = sum(1 for r in replies if r.has_error())
        self._log(event="replies", call=self.calls, replies=len(replies), errors=errors)
        return replies

    def push_messages(self, messages: Any) -> Any:
        messages = list(messages)
        self._count_out(messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Any) -> Any:
        replies = list(self._grid.pull_messages(message_ids))
        self._count_in(replies)
        return replies


def _delta(now: dict[int, int], before: dict[int, int]) -> dict[str, int]:
    return {str(k): v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


class TimedRounds:
    """The fit workflow, timed per round (a round = SecAgg+'s four stages)."""

    def __init__(self, inner: Any, grid: CountingGrid, out: Path) -> None:
        self.inner, self.grid, self.out = inner, grid, out
        self.rounds: list[dict[str, Any]] = []

    def __call__(self, grid: Any, context: Any) -> None:
        before = self.grid.calls, dict(self.grid.sent), dict(self.grid.received)
        self.grid._log(event="round", round=len(self.rounds) + 1)
        start = time.perf_counter()
        error = None
        try:
            self.inner(grid, context)
        except Exception as exc:  # an aborted round is a result, recorded
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
        from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

        params = context.state.array_records[MAIN_PARAMS_RECORD]
        self.rounds.append(
            {
                "round": len(self.rounds) + 1,
                "seconds": seconds,
                "stages": self.grid.calls - before[0],
                "sent_bytes": _delta(self.grid.sent, before[1]),
                "received_bytes": _delta(self.grid.received, before[2]),
                "error": error,
                "params_bytes": sum(len(a.data) for a in params.values()),
            }
        )
        self.dump()

    def dump(self) -> None:
        doc = {
            "rounds": self.rounds,
            "sent_bytes": {str(k): v for k, v in self.grid.sent.items()},
            "received_bytes": {str(k): v for k, v in self.grid.received.items()},
        }
        tmp = self.out / "rounds.json.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.out / "rounds.json")


server_app = ServerApp()


@server_app.main()
def main(grid: Any, context: Context) -> None:
    rc = dict(context.run_config)
    out = Path(str(rc["out"]))
    out.mkdir(parents=True, exist_ok=True)
    counting = CountingGrid(grid, out / "progress.jsonl")
    n = int(rc["nodes"])
    deadline = time.monotonic() + 300
    while len(list(grid.get_node_ids())) < n and time.monotonic() < deadline:
        time.sleep(1)
    cfg = _pool_config(str(rc["config"]))
    initial = [p.detach().numpy().copy() for p in _model(cfg).parameters()]
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=2,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(initial),
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=int(rc["rounds"])), strategy=strategy
    )
    shares = rc["num-shares"]
    timed = TimedRounds(
        SecAggPlusWorkflow(
            num_shares=shares,
            reconstruction_threshold=rc["reconstruction-threshold"],
            timeout=float(rc["timeout"]),
        ),
        counting,
        out,
    )
    DefaultWorkflow(fit_workflow=timed)(counting, legacy)  # type: ignore[arg-type]
    timed.dump()
    (out / "done").write_text("ok\n")


class DigitsClient(NumPyClient):
    def __init__(self, node_config: dict[str, Any]) -> None:
        self.node_config = node_config

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict]:
        import torch

        from securepool.node.records import builtin_partition
        from securepool.training import PlainTrainer, TrainSettings

        cfg = _pool_config(str(self.node_config["config"]))
        torch.set_num_threads(1)
        model = _model(cfg)
        with torch.no_grad():
            for p, a in zip(model.parameters(), parameters, strict=True):
                p.copy_(torch.from_numpy(a))
        pid = str(self.node_config["node-id"])
        data = builtin_partition(cfg, pid=pid)
        t = cfg.training
        report = PlainTrainer().train(
            participant=pid,
            model=model,
            x=data.x_train,
            y=data.y_train,
            settings=TrainSettings(
                epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum
            ),
            seed=int(config.get("server_round", 0)),
        )
        return [p.detach().numpy().copy() for p in model.parameters()], report.samples, {}


def client_fn(context: Context) -> Any:
    node = dict(context.node_config)
    # a relay SuperNode's node config names no config (only its node service's socket,
    # securepool.node.relay): the pool config is then the run config's
    node.setdefault("config", context.run_config["config"])
    return DigitsClient(node).to_client()


client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
