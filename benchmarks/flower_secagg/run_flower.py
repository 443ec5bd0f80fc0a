"""Flower 1.42's own SecAgg+ (SecAggPlusWorkflow + secaggplus_mod), driven in-process.

    bash benchmarks/flower_secagg/setup.sh
    /tmp/flwr-venv/bin/python benchmarks/flower_secagg/run_flower.py --n 100 --d 100000 \
        --dropout 0.1 --num-shares 3 --repeats 3

A stand-in Grid delivers every message straight to each node's ClientApp stack
(secaggplus_mod around a fit that returns the node's vector), so the timings are the
protocol's own work: client_s = median over nodes of time spent inside the mod, server_s
= the workflow's wall time minus all client time and minus the simulated transport
(a deep copy of each message, as serialisation would give every node its own).
Dropouts: a node drops at a uniformly random stage with probability --dropout (it stops
answering from that stage on); an exception in a node's mod counts as its error reply.
Prints one JSON object, comparable with `securepool bench secagg`.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from typing import Any

import numpy as np
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Code,
    ConfigRecord,
    Context,
    FitRes,
    Message,
    RecordDict,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow
from flwr.supercore.task_identity import TaskIdentity

SUPERLINK = 1

STAGES = ["setup", "share_keys", "collect_masked_vectors", "unmask"]


class InProcessGrid:
    def __init__(self, vectors: dict[int, np.ndarray], drop_stage: dict[int, int]) -> None:
        self.vectors = vectors
        self.drop_stage = drop_stage
        self.contexts = {
            nid: Context(run_id=0, node_id=nid, node_config={}, state=RecordDict(), run_config={})
            for nid in vectors
        }
        self.client_time: dict[int, float] = {nid: 0.0 for nid in vectors}
        self.calls = 0
        self.client_errors: list[str] = []
        self.transport_time = 0.0  # copying messages: neither server nor client work

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        stage = self.calls
        self.calls += 1
        replies = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            if self.drop_stage.get(nid, 99) <= stage:
                continue

            def fit(m: Message, ctx: Context, nid: int = nid) -> Message:
                res = FitRes(
                    Status(Code.OK, ""), ndarrays_to_parameters([self.vectors[nid]]), 1, {}
                )
                return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=m)

            t0 = time.perf_counter()
            msg = copy.deepcopy(msg)  # what a transport does: each node gets its own copy
            self.transport_time += time.perf_counter() - t0
            TaskIdentity.node_id = nid  # the node that answers
            start = time.perf_counter()
            try:
                reply = secaggplus_mod(msg, self.contexts[nid], fit)
            except Exception as exc:  # Flower's runtime turns this into an error reply
                self.client_errors.append(f"node {nid}: {type(exc).__name__}: {exc}")
                continue
            finally:
                self.client_time[nid] += time.perf_counter() - start
                TaskIdentity.node_id = SUPERLINK
            replies.append(reply)
        return replies


def one_round(
    n: int, d: int, dropout: float, num_shares: float | int, rng: np.random.Generator
) -> dict[str, Any]:
    vectors = {nid: rng.uniform(-1, 1, d).astype(np.float32) for nid in range(1, n + 1)}
    drop_stage = {nid: int(rng.integers(0, 4)) for nid in vectors if rng.random() < dropout}
    grid = InProcessGrid(vectors, drop_stage)
    cm = SimpleClientManager()
    for nid in vectors:
        cm.register(GridClientProxy(nid, grid, run_id=0))  # type: ignore[arg-type]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n)
    base = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    ctx = LegacyContext(
        base, config=ServerConfig(num_rounds=1), strategy=strategy, client_manager=cm
    )
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({"current_round": 1})
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]), True
    )
    workflow = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=0.5)
    start = time.perf_counter()
    workflow(grid, ctx)  # type: ignore[arg-type]
    total = time.perf_counter() - start
    out = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(
            ctx.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
    )[0]
    survivors = [nid for nid in vectors if nid not in drop_stage or drop_stage[nid] >= 3]
    aborted = grid.calls < 4 or not np.any(out)
    exact = np.mean([vectors[nid] for nid in survivors], axis=0)
    client_times = [t for t in grid.client_time.values() if t > 0]
    return {
        "aborted": bool(aborted),
        "client_errors": len(grid.client_errors),
        "server_s": total - sum(grid.client_time.values()) - grid.transport_time,
        "client_s_median": statistics.median(client_times),
        "max_abs_error_of_mean": None if aborted else float(np.abs(out - exact).max()),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--d", type=int, default=100_000)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument(
        "--num-shares", default="3", help="an int (neighbours) or a float share of all (1.0)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    random.seed(args.seed)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 0
    TaskIdentity.node_id = SUPERLINK
    rng = np.random.default_rng(args.seed)
    shares: float | int = float(args.num_shares) if "." in args.num_shares else int(args.num_shares)
    runs = [one_round(args.n, args.d, args.dropout, shares, rng) for _ in range(args.repeats)]
    ok = [r for r in runs if not r["aborted"]]
    print(
        json.dumps(
            {
                "framework": "flwr 1.42.0",
                "n": args.n,
                "d": args.d,
                "dropout": args.dropout,
                "num_shares": shares,
                "repeats": args.repeats,
                "aborted": sum(r["aborted"] for r in runs),
                "client_errors": sum(r["client_errors"] for r in runs),
                "server_s": statistics.median(r["server_s"] for r in ok) if ok else None,
                "client_s_median": statistics.median(r["client_s_median"] for r in ok)
                if ok
                else None,
                "max_abs_error_of_mean": max(
                    (r["max_abs_error_of_mean"] for r in ok), default=None
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
