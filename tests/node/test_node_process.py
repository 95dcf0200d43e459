"""``avrs node`` as a real process: the all-in-one node on embedded defaults (data directory with a
stable identity and a local CA), its session log (one JSON line per connect, authenticate, join,
publish, refusal and disconnect), ``avrs status`` with and without credentials, and pinning."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from dapsdk.avrs import AvrsError, ContentFlag
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.runtime.node import StreamNode
from dapsdk.services.auth import ClusterCA, Role
from dapsdk.services.avrs_client import AvrsClient
from dapsdk.services.avrs_cluster import cluster_guuid, content_guuid
from dapsdk.stream.config import StreamConfig
from dapsdk.stream.identity import NodeIdentity

TIMEOUT = 30.0
CLUSTER = cluster_guuid("main_cluster")


class NodeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, lines: dict[str, str]) -> None:
        self.proc = proc
        self.lines = lines

    @property
    def address(self) -> str:
        return self.lines["node"]

    @property
    def url(self) -> str:
        return self.lines["listening"]

    async def stop(self) -> list[dict[str, Any]]:
        """SIGTERM, wait, and return the JSON log lines of stderr."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(self.proc.communicate(), TIMEOUT)
        assert self.proc.returncode == 0, err.decode()
        return [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]


async def start_node(*args: str) -> NodeProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dapsdk.cli", "node", *args, "--ready",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: dict[str, str] = {}
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        if not raw:
            _, err = await proc.communicate()
            raise AssertionError(f"node exited: {err.decode()}")
        label, _, rest = raw.decode().strip().partition(" ")
        if label == "ready":
            return NodeProcess(proc, lines)
        lines.setdefault(label, rest)


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dapsdk.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AVRS_KNOWN_HOSTS": os.devnull},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def publish_session(data_dir: Path, url: str) -> str:
    """A publisher with a SERVER certificate from the node's local CA: opens a session, is refused
    once (bad token), joins with its certificate, declares and attaches a content for input."""
    identity = NodeIdentity.generate()
    ca = ClusterCA.load(data_dir / "ca")
    cert = ca.issue(identity.public_key, Role.SERVER, now=__import__("time").time(), days=1)
    der = cert.public_bytes(Encoding.DER)
    node = StreamNode(identity, StreamConfig(certificate=der))
    await node.start()
    try:
        client = AvrsClient(await node.connect(url), AvrsSigner(identity.private_key))
        await client.open()
        refused = await client.join(CLUSTER, token="not-a-token")
        assert refused.code == AvrsError.MEMBER_SECURITY_ISSUE
        assert (await client.join(CLUSTER, certificate=der)).code == AvrsError.SUCCESS
        content = content_guuid("lecture-1")
        await client.add_content(CLUSTER, content, "av", codecs=("h264", "aac"))
        await client.attach(CLUSTER, content, ContentFlag.STREAMING_IN)
        await client.close()
    finally:
        await node.close()
    return str(identity.address)


async def test_all_in_one_node_logs_the_life_of_a_session(tmp_path: Path) -> None:
    data_dir = tmp_path / "avrs-data"
    node = await start_node(
        "--data-dir",
        str(data_dir),
        "--listen",
        "tcp://127.0.0.1:0",
        "--rtmp-port",
        "0",
        "--log-format",
        "json",
    )
    try:
        assert node.url.startswith("tcp://127.0.0.1:") and node.url.endswith(
            f"?node={node.address}"
        )
        assert node.lines["data-dir"] == str(data_dir)
        for name in ("node.key", "node.crt", "ca/ca.crt", "ca/ca.key", "ca/crl.pem"):
            assert (data_dir / name).is_file(), name
        publisher = await publish_session(data_dir, node.url)
    finally:
        logs = await node.stop()

    port = node.url.split(":")[2].split("?")[0]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for entry in logs:
        if "event" in entry:
            by_event.setdefault(entry["event"], []).append(entry)
    for event in ("connect", "authenticate", "refuse", "join", "publish", "disconnect"):
        entries = [e for e in by_event.get(event, []) if e.get("node") == publisher]
        assert entries, f"no {event!r} line for {publisher} in {logs}"
        entry = entries[0]
        assert entry["local"] == node.address
        assert entry["peer"].startswith("127.0.0.1:") and not entry["peer"].endswith(f":{port}")
        if event in ("authenticate", "refuse", "join", "publish"):
            assert len(entry["session"]) == 16, entry
    assert by_event["refuse"][0]["code"] == "MEMBER_SECURITY_ISSUE"
    assert all("not-a-token" not in json.dumps(entry) for entry in logs)  # credentials stay out

    # The same data directory gives the same node (identity and CA reused).
    ca_before = (data_dir / "ca" / "ca.crt").read_bytes()
    again = await start_node(
        "--data-dir", str(data_dir), "--listen", "tcp://127.0.0.1:0", "--rtmp-port", "0"
    )
    try:
        assert again.address == node.address
        assert (data_dir / "ca" / "ca.crt").read_bytes() == ca_before

        # avrs status: pinned URL required; public facts without credentials, all with them.
        bare = again.url.split("?")[0]
        code, _, err = await run_cli("status", bare)
        assert code == 2 and "refusing to connect without a pinned node identity" in err
        code, out, err = await run_cli("status", again.url)
        assert code == 0, err
        public = json.loads(out)
        assert public["access"] == "public" and public["roles"] == "host,server"
        assert {"version", "load", "node"} <= set(public) and "streams" not in public
        assert "listeners" not in public
        code, out, err = await run_cli(
            "status", again.url, "--key", str(data_dir / "node.key"),
            "--cert", str(data_dir / "node.crt"),
        )  # fmt: skip
        assert code == 0, err
        full = json.loads(out)
        assert full["access"] == "full" and full["listeners"][0] == again.url
        if "http" in again.lines:  # the gateway got 127.0.0.1:8080: its /ws is a listener too
            ws = again.lines["http"].replace("http://", "ws://") + "/ws?node="
            assert full["listeners"][1:] == [ws + again.url.split("?node=")[1]]
        else:
            assert full["listeners"] == [again.url]
    finally:
        await again.stop()


async def test_debug_more_turns_on_protocol_debug_lines(tmp_path: Path) -> None:
    config = tmp_path / "node.cfg"
    config.write_text("[avrs]\nrole = host\nlisten = tcp://127.0.0.1:0\ndebug_more = true\n")
    node = await start_node("--config", str(config), "--log-format", "json")
    try:
        client = StreamNode()
        await client.start()
        await client.connect(node.url)
        await client.close()
    finally:
        logs = await node.stop()
    debug = [e for e in logs if e["level"] == "debug"]
    assert debug and all(e["logger"].startswith("dapsdk.") for e in debug)
    # Without debug_more, the default --log-level info shows none.
    config.write_text("[avrs]\nrole = host\nlisten = tcp://127.0.0.1:0\n")
    node = await start_node("--config", str(config), "--log-format", "json")
    client = StreamNode()
    await client.start()
    await client.connect(node.url)
    await client.close()
    logs = await node.stop()
    assert logs and not [e for e in logs if e["level"] == "debug"]


async def test_a_stderr_nobody_reads_does_not_stall_the_node(tmp_path: Path) -> None:
    """Log records go through a bounded queue to a writer thread: when the stderr pipe is full
    (nobody reads it), records are dropped and the node keeps serving."""
    config = tmp_path / "node.cfg"
    config.write_text("[avrs]\nrole = host\nlisten = tcp://127.0.0.1:0\ndebug_more = true\n")
    unread, stderr = os.pipe()  # the read end is never read
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dapsdk.cli", "node", "--config", str(config),
        "--log-level", "debug", "--ready", stdout=asyncio.subprocess.PIPE, stderr=stderr,
    )  # fmt: skip
    os.close(stderr)
    try:
        assert proc.stdout is not None
        url = ""
        while (
            line := (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
        ) != "ready\n":
            assert line, "node exited"
            if line.startswith("listening "):
                url = line.split()[1]
        client = StreamNode()
        await client.start()
        # Each connection writes about 550 bytes of DEBUG/INFO lines; 250 of them are about
        # twice the 64 KiB a pipe holds.
        for _ in range(250):
            stream = await asyncio.wait_for(client.connect(url), 10.0)
            stream.abort()
        await client.close()
    finally:
        proc.kill()
        await proc.wait()
        os.close(unread)
