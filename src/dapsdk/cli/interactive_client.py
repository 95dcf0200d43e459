"""What ``avrs chat``, ``avrs poll`` and ``avrs moderate`` share: connect with a client config,
become a member (token and/or the config's certificate), attach the content, and print the
node's interactive pushes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from ..avrs.constants import ContentFlag, SessionArg, SessionOp
from ..avrs.errors import AvrsError
from ..avrs.events import ResponseReceived
from ..node.config import ConfigError, load_node_config
from ..node.wiring import build_node
from ..runtime.loop import run
from ..services.avrs_client import AvrsClient, AvrsRequestError
from ..services.avrs_cluster import content_guuid
from ..services.registry.memory import MemoryRegistry

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(func: F) -> F:
    """--config, --token, --to."""
    func = click.option("--to", "target", default=None, help="Node URL (default: host_address).")(
        func
    )
    func = click.option(
        "--token",
        "token_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="File with an access token (else the config's certificate makes us a member).",
    )(func)
    func = click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Client INI configuration (identity, host_address, ca_certificate_file).",
    )(func)
    return func


class Session:
    def __init__(self, client: AvrsClient, cluster_id: bytes, content_id: bytes) -> None:
        self.client = client
        self.cluster_id = cluster_id
        self.content_id = content_id


@asynccontextmanager
async def interactive_session(
    config_path: Path, token_file: Path | None, target: str | None, content: str
) -> AsyncIterator[Session]:
    config = load_node_config(config_path)
    node = build_node(config, registry=MemoryRegistry())
    await node.start()
    try:
        client = await node.connect_client(target)
        try:
            await client.open()
            cluster_id = node.directory.cluster_id
            token = token_file.read_text().strip() if token_file is not None else None
            certificate = node.credentials.certificate_der
            if token is not None or certificate is not None:
                reply = await client.join(cluster_id, token=token, certificate=certificate)
                if reply.code not in (AvrsError.SUCCESS, AvrsError.MEMBER_ALREADY_EXISTS):
                    raise AvrsRequestError(reply)
            content_id = content_guuid(content)
            await client.attach(cluster_id, content_id, ContentFlag.STREAMING_OUT)
            yield Session(client, cluster_id, content_id)
        finally:
            await client.close()
    finally:
        await node.close()


def describe_push(push: ResponseReceived) -> str:
    """One line for a CHAT_MESSAGE, POLL_STATE or MODERATION push."""
    args = push.args
    if push.op == SessionOp.CHAT_MESSAGE:
        mid = int.from_bytes(args.get(SessionArg.MESSAGE_ID) or bytes(8), "little")
        sender = (args.get(SessionArg.MEMBER) or b"").hex()[:16]
        name = (args.get(SessionArg.DISPLAY_NAME) or b"").decode("utf-8", "replace")
        text = (args.get(SessionArg.TEXT) or b"").decode("utf-8", "replace")
        tag = " (history)" if args.get(SessionArg.HISTORY) == b"\x01" else ""
        return f"chat #{mid} {name or sender}: {text}{tag}"
    if push.op == SessionOp.POLL_STATE:
        pid = int.from_bytes(args.get(SessionArg.POLL_ID) or bytes(4), "little")
        question = (args.get(SessionArg.TEXT) or b"").decode("utf-8", "replace")
        options = [o.decode("utf-8", "replace") for o in args.all(SessionArg.POLL_OPTION)]
        raw = args.get(SessionArg.POLL_COUNTS) or b""
        counts = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4)]
        state = "open" if args.get(SessionArg.POLL_OPEN) == b"\x01" else "closed"
        results = ", ".join(f"{o}={c}" for o, c in zip(options, counts, strict=False))
        return f"poll #{pid} {state} {question!r}: {results}"
    if push.op == SessionOp.MODERATION:
        action = (args.get(SessionArg.MOD_ACTION) or b"\x00")[0]
        member = (args.get(SessionArg.MEMBER) or b"").hex()[:16]
        raw_id = args.get(SessionArg.MESSAGE_ID)
        what = f" message #{int.from_bytes(raw_id, 'little')}" if raw_id else ""
        return f"moderation {action} {member}{what}".rstrip()
    return f"push 0x{push.op:02x}"


async def print_pushes(session: Session, seconds: float) -> None:
    """Print pushes as they come for ``seconds`` (0: only those already received)."""
    loop_time = asyncio.get_running_loop().time
    deadline = loop_time() + seconds
    while True:
        remaining = deadline - loop_time()
        try:
            if remaining > 0:
                push = await session.client.next_push(remaining)
            else:
                push = session.client.pushes.get_nowait()
        except (TimeoutError, asyncio.QueueEmpty):
            return
        click.echo(describe_push(push))


def execute(coro: Any) -> None:
    """Run the command; a refusal prints its AVRS code and token and exits 1."""
    try:
        run(coro)
    except AvrsRequestError as exc:
        click.echo(f"error: {exc.token} (0x{exc.code:08x}): {exc.detail}", err=True)
        sys.exit(1)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (OSError, TimeoutError, ConnectionError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
