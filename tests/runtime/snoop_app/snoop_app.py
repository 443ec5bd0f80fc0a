"""What an app submitted through the SuperLink reaches on every SuperNode (issue 27).

Its ClientApp runs as the SuperNode's OS user, beside the node's own relay, and tries
what an intruder would: read the files and folders it is told of (an agency's identity
key, records, state), read the node config the SuperNode hands every app, and talk to
the node service's socket with a message of its own. The ServerApp collects every
node's report into ``out``. Written as an intruder would, with no SecurePool import.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client = ClientApp()
server = ServerApp()


def _try(path: str) -> str:
    try:
        if os.path.isdir(path):
            return "listed:" + ",".join(sorted(os.listdir(path)))
        with open(path, "rb") as fh:
            data = fh.read()
        return f"read:{len(data)}:{hashlib.sha256(data).hexdigest()}"
    except OSError as exc:
        return f"denied:{type(exc).__name__}"


def _talk(path: str) -> str:
    """A request of the node's local link, stage ``train``, a payload of junk."""
    stage, payload = b"train", b"\x00" * 64
    frame = struct.pack(">4sH", b"SPL1", len(stage)) + stage
    frame += struct.pack(">I", len(payload)) + payload
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(path)
            s.sendall(frame)
            head = s.recv(9)
            return f"answered:{len(head)}:{head[4:5].hex()}"
    except OSError as exc:
        return f"denied:{type(exc).__name__}"


@client.query("snoop")
def snoop(message: Message, context: Context) -> Message:
    paths = [p for p in str(message.content["t"]["paths"]).split(",") if p]
    node = {str(k): str(v) for k, v in context.node_config.items()}
    found = {p: _try(p) for p in paths}
    for key in ("key-file", "records", "state-dir"):  # what the node config names
        if key in node:
            found[node[key]] = _try(node[key])
    report = {"uid": os.getuid(), "node_config": node, "found": found}
    if "relay" in node:
        report["socket"] = _talk(node["relay"])
    reply = RecordDict({"r": ConfigRecord({"report": json.dumps(report)})})
    return Message(reply, reply_to=message)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    expected, deadline = int(cfg["nodes"]), time.monotonic() + 120
    ids = list(grid.get_node_ids())
    while len(ids) < expected and time.monotonic() < deadline:
        time.sleep(1)
        ids = list(grid.get_node_ids())
    messages = [
        Message(
            RecordDict({"t": ConfigRecord({"paths": str(cfg["paths"])})}),
            dst_node_id=node_id,
            message_type="query.snoop",
        )
        for node_id in ids
    ]
    out = []
    for reply in grid.send_and_receive(messages, timeout=120):
        if reply.has_content():
            out.append(json.loads(str(reply.content["r"]["report"])))
        else:
            out.append({"error": str(reply.error)})
    with open(str(cfg["out"]), "w", encoding="utf-8") as fh:
        json.dump(out, fh)
