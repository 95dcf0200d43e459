"""Issue 10's interactive broadcasts on a REAL node process, with three viewers, the content's
publisher (its owner) and an operator: chat fanned out with history on join, polls (one vote per
identity, results pushed), moderation (delete, mute, slow mode, ban), each denied action with its
code; and the `avrs chat`, `avrs poll`, `avrs moderate` commands against the same node."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from dapsdk.avrs import AvrsError, ContentFlag
from dapsdk.avrs.constants import AvrsChannel, ClusterArg, ClusterOp, Role, SessionArg, SessionOp
from dapsdk.avrs.events import ResponseReceived
from dapsdk.avrs.tsd import Tsd
from dapsdk.services.auth import TokenGrants
from dapsdk.services.avrs_client import AvrsClient, AvrsRequestError
from dapsdk.services.avrs_cluster import content_guuid
from dapsdk.services.interactive import ModAction

from .avrs_env import CLUSTER_ID
from .test_enforcement import Deployment, deployment  # noqa: F401 - the real node fixture

ROOT = Path(__file__).resolve().parents[2]
DEBATE = content_guuid("debate")
TIMEOUT = 20.0


async def push(client: AvrsClient, op: SessionOp, text: str | None = None) -> ResponseReceived:
    """The next push of type ``op`` (and TEXT ``text``), skipping others."""
    while True:
        got = await client.next_push(TIMEOUT)
        if got.op != op:
            continue
        if text is not None and got.args.get(SessionArg.TEXT) != text.encode():
            continue
        return got


async def code_of(coro: object) -> int:
    try:
        await coro  # type: ignore[misc]
    except AvrsRequestError as exc:
        return int(exc.code)
    return int(AvrsError.SUCCESS)


def counts(p: ResponseReceived) -> list[int]:
    raw = p.args.get(SessionArg.POLL_COUNTS) or b""
    return [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4)]


async def viewer(dep: Deployment, name: str) -> AvrsClient:
    client, code = await dep.with_token(name, TokenGrants(subscribe=True, content_ids=("debate",)))
    assert code == AvrsError.SUCCESS
    return client


async def test_chat_polls_and_moderation_across_three_viewers(deployment: Deployment) -> None:  # noqa: F811
    dep = deployment
    pub_node, host, _handle = await dep.env.start_publisher(dep.url, "debate", title="Debate")
    dep.nodes.append(pub_node)
    dep.clients.append(host)
    a = await viewer(dep, "va")
    b = await viewer(dep, "vb")
    c = await viewer(dep, "vc")
    C, D = CLUSTER_ID, DEBATE

    # --- chat: not attached yet is refused; then fanned out to every member
    assert await code_of(a.chat(C, D, "too early")) == AvrsError.SESSION_CONTENT_ID_WRONG
    for v in (a, b):
        await v.attach(C, D)
    first = await a.chat(C, D, "hello all")
    for member in (a, b, host):
        got = await push(member, SessionOp.CHAT_MESSAGE, "hello all")
        assert got.args.get(SessionArg.MEMBER) == a.identity
    # unsigned chat: SIGN_NOT_PRESENT
    unsigned = await a.request(
        AvrsChannel.SESSION,
        SessionOp.CHAT,
        [
            Tsd(SessionArg.CLUSTER_ID, C),
            Tsd(SessionArg.CONTENT_UUID, D),
            Tsd(SessionArg.TEXT, b"x"),
        ],
    )
    assert unsigned.code == AvrsError.SIGN_NOT_PRESENT
    # a late member gets the recent history first
    await c.attach(C, D)
    history = await push(c, SessionOp.CHAT_MESSAGE, "hello all")
    assert history.args.get(SessionArg.HISTORY) == b"\x01"

    # --- polls: only host/operator/owner create; one vote per identity; results pushed
    assert await code_of(a.create_poll(C, D, "Who won?", ["x", "y"])) == AvrsError.SIGN_ALIEN
    poll = await host.create_poll(C, D, "Who won?", ["x", "y"])
    for member in (a, b, c):
        assert counts(await push(member, SessionOp.POLL_STATE)) == [0, 0]
    await a.vote(C, D, poll, 0)
    assert await code_of(a.vote(C, D, poll, 1)) == AvrsError.POLL_ALREADY_VOTED
    assert await code_of(c.vote(C, D, poll, 7)) == AvrsError.ARG_INCORRECT
    assert await code_of(c.vote(C, D, poll + 99, 0)) == AvrsError.POLL_NOT_FOUND
    await b.vote(C, D, poll, 1)
    assert await code_of(a.close_poll(C, D, poll)) == AvrsError.SIGN_ALIEN
    await host.close_poll(C, D, poll)
    for member in (a, b, c):
        final = await push(member, SessionOp.POLL_STATE)
        while final.args.get(SessionArg.POLL_OPEN) != b"\x00":
            final = await push(member, SessionOp.POLL_STATE)
        assert counts(final) == [1, 1]
    assert await code_of(c.vote(C, D, poll, 0)) == AvrsError.POLL_CLOSED

    # --- moderation: viewers may not; an operator needs TOTP; the owner may
    mute_b = dict(member=b.identity)
    assert await code_of(a.moderate(C, D, ModAction.MUTE, **mute_b)) == AvrsError.SIGN_ALIEN
    operator = await dep.certified("op", Role.OPERATOR, totp=True)
    assert await code_of(operator.moderate(C, D, ModAction.MUTE, **mute_b)) == (
        AvrsError.MEMBER_TOTP_REQUIRED
    )
    await host.moderate(C, D, ModAction.MUTE, **mute_b)
    assert await code_of(b.chat(C, D, "let me speak")) == AvrsError.CHAT_MUTED
    await host.moderate(C, D, ModAction.DELETE_MESSAGE, message_id=first)
    deleted = await push(c, SessionOp.MODERATION)
    while deleted.args.get(SessionArg.MOD_ACTION) != bytes([ModAction.DELETE_MESSAGE]):
        deleted = await push(c, SessionOp.MODERATION)
    assert int.from_bytes(deleted.args.get(SessionArg.MESSAGE_ID) or b"", "little") == first
    assert await code_of(host.moderate(C, D, ModAction.DELETE_MESSAGE, message_id=first)) == (
        AvrsError.MESSAGE_NOT_FOUND
    )
    await host.moderate(C, D, ModAction.SLOW_MODE, duration=600)
    await c.chat(C, D, "one")
    assert await code_of(c.chat(C, D, "two")) == AvrsError.CHAT_SLOW_MODE
    # the operator bans c, with its second factor: c loses the content and its voice
    await operator.moderate(C, D, ModAction.BAN, member=c.identity, totp=dep.totp("op"))
    notice = await c.next_notice(TIMEOUT)
    assert notice.code == AvrsError.MEMBER_BANNED and notice.op == SessionOp.CONTENT_REMOVE
    assert await code_of(c.chat(C, D, "still here?")) == AvrsError.MEMBER_BANNED
    assert await code_of(c.attach(C, D)) == AvrsError.MEMBER_BANNED
    # slow mode off: the others chat again
    await host.moderate(C, D, ModAction.SLOW_MODE, duration=0)
    await a.chat(C, D, "bye")
    await push(b, SessionOp.CHAT_MESSAGE, "bye")


async def test_features_switched_off_are_refused(deployment: Deployment) -> None:  # noqa: F811
    dep = deployment
    owner = await dep.certified("srv", Role.SERVER)
    quiet = content_guuid("quiet")
    reply = await owner.request(
        AvrsChannel.CLUSTER,
        ClusterOp.CONTENT_ADD,
        [
            Tsd(ClusterArg.ID, CLUSTER_ID),
            Tsd(ClusterArg.CONTENT_ID, quiet),
            Tsd(ClusterArg.CONTENT_FLOWS, b"av"),
            Tsd(ClusterArg.CONTENT_NAME, b"quiet"),
            Tsd(ClusterArg.CONTENT_INTERACTIVE, b"\x00"),  # no chat, no polls, no moderation
        ],
        signed=True,
    )
    assert reply.code == AvrsError.SUCCESS
    await owner.attach(CLUSTER_ID, quiet, ContentFlag.STREAMING_OUT)
    assert await code_of(owner.chat(CLUSTER_ID, quiet, "hi")) == AvrsError.INTERACTIVE_DISABLED
    assert await code_of(owner.create_poll(CLUSTER_ID, quiet, "q", ["a", "b"])) == (
        AvrsError.INTERACTIVE_DISABLED
    )
    assert await code_of(owner.moderate(CLUSTER_ID, quiet, ModAction.SLOW_MODE, duration=5)) == (
        AvrsError.INTERACTIVE_DISABLED
    )


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "dapsdk.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


async def test_chat_poll_moderate_commands(deployment: Deployment) -> None:  # noqa: F811
    dep = deployment
    env = dep.env
    pub_node, host, _ = await env.start_publisher(dep.url, "debate", title="Debate")
    dep.nodes.append(pub_node)
    dep.clients.append(host)
    watcher = await viewer(dep, "watcher")
    await watcher.attach(CLUSTER_ID, DEBATE)
    # a CLI viewer with its own identity and token
    cli_id = env.identity("cliviewer")
    config = env.client_config("cliviewer", dep.url)
    token = env.root / "cliviewer.token"
    token.write_text(env.token(str(cli_id.address), content=("debate",)))
    common = ["--config", str(config), "--token", str(token)]
    said = await _cli("chat", "debate", *common, "--say", "hello from the cli")
    assert said.returncode == 0, said.stderr
    assert "sent #" in said.stdout
    await push(watcher, SessionOp.CHAT_MESSAGE, "hello from the cli")
    poll = await host.create_poll(CLUSTER_ID, DEBATE, "Tea or coffee?", ["tea", "coffee"])
    voted = await _cli("poll", "vote", "debate", str(poll), "1", *common)
    assert voted.returncode == 0, voted.stderr
    state = await push(watcher, SessionOp.POLL_STATE)
    while counts(state) != [0, 1]:
        state = await push(watcher, SessionOp.POLL_STATE)
    again = await _cli("poll", "vote", "debate", str(poll), "0", *common)
    assert again.returncode == 1 and "POLL_ALREADY_VOTED" in again.stderr
    denied = await _cli("moderate", "mute", "debate", *common, "--member", watcher.identity.hex())
    assert denied.returncode == 1 and "SIGN_ALIEN" in denied.stderr
    history = await _cli("chat", "debate", *common)
    assert history.returncode == 0 and "hello from the cli (history)" in history.stdout


async def test_compat_create_interactive_broadcast(tmp_path: Path) -> None:
    """The seed's scenario 3 through dapsdk.compat: the broadcast's features are enforced."""
    from dapsdk import compat

    from .avrs_env import AvrsEnv

    env = AvrsEnv(tmp_path)
    result = compat.avrs_plugin_init(compat.dap_config_load(str(env.server_config())))
    assert (result[0] if isinstance(result, tuple) else result) == 0
    try:
        assert compat.avrs_ch_init() == 0
        config = compat.avrs_interactive_config_t(allow_chat=True, allow_polls=False)
        broadcast = compat.avrs_create_interactive_broadcast("debate_session", config)
        assert broadcast is not None and broadcast.content_id == content_guuid("debate_session")
        url = compat.avrs_node().urls[0]
        dep = Deployment(env, url)
        try:
            client, code = await dep.with_token(
                "v",
                TokenGrants(subscribe=True, content_ids=("debate_*",)),  # a pattern
            )
            assert code == AvrsError.SUCCESS
            await client.attach(CLUSTER_ID, broadcast.content_id)
            await client.chat(CLUSTER_ID, broadcast.content_id, "first!")
            await push(client, SessionOp.CHAT_MESSAGE, "first!")
            owner_only = client.create_poll(CLUSTER_ID, broadcast.content_id, "q", ["a", "b"])
            assert await code_of(owner_only) == AvrsError.SIGN_ALIEN
        finally:
            await dep.close()
        assert compat.avrs_create_interactive_broadcast("") is None  # not a content name
    finally:
        compat.avrs_plugin_deinit()


async def test_a_member_that_never_reads_misses_pushes_instead_of_growing_the_node(
    tmp_path: Path,
) -> None:
    """Bound (docs/reliability.md): pushes to a member whose session channel is above the
    high-water mark are dropped and counted; the node's queue for it stays bounded."""
    from dapsdk.avrs.constants import AvrsChannel as Ch

    from .avrs_env import AvrsEnv

    env = AvrsEnv(tmp_path)
    node = await env.start_server()
    dep = Deployment(env, node.urls[0])
    try:
        owner = await dep.certified("owner", Role.SERVER)
        await owner.add_content(CLUSTER_ID, DEBATE, "av", name="debate")
        talker = await viewer(dep, "talker")
        deaf = await viewer(dep, "deaf")
        for member in (talker, deaf):
            await member.attach(CLUSTER_ID, DEBATE)
        deaf.channels[Ch.SESSION].packet_in = None  # its pushes now wait unread (no credit back)
        line = "x" * 1900
        high_water = next(iter(node.service.bindings.values())).stream.config.send_high_water
        service = node.service
        sent = 0
        while service.interactive.dropped == 0:
            await talker.chat(CLUSTER_ID, DEBATE, line)
            sent += 1
            assert sent < 5000, "no push was ever dropped"
        queued = max(
            b.channels[Ch.SESSION].queued_bytes
            for b in service.bindings.values()
            if Ch.SESSION in b.channels
        )
        assert queued < high_water + 4096  # one push beyond the mark at most
    finally:
        await dep.close()
        await node.close()
