"""Live media through a real node (in-process cluster on loopback): a publisher sends a clip as
signed envelopes, viewers receive it remuxed by PyAV, with the GOP cache, forged-packet and
bitrate rules."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import av
import pytest

from dapsdk.avrs import AvrsError, ContentFlag, MediaFlag
from dapsdk.avrs.signing import AvrsSigner
from dapsdk.node.sandbox import Sandbox
from dapsdk.services.avrs_cluster import content_guuid
from dapsdk.services.avrs_media import sign_media
from dapsdk.services.media.model import MediaPacket
from dapsdk.services.media.player import FileSink, play
from dapsdk.services.media.publisher import PublishRefused, publish
from dapsdk.services.media.source import FileSource, PatternSource
from dapsdk.stream.identity import NodeIdentity

pytestmark = pytest.mark.asyncio


def packet_hashes(path: Path) -> dict[str, list[tuple[int | None, int | None, str]]]:
    """Per stream kind: (pts, dts, md5) of every packet, in time-base-independent order."""
    result: dict[str, list[tuple[int | None, int | None, str]]] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size == 0:
                continue
            kind = packet.stream.type
            result.setdefault(kind, []).append(hashlib.md5(bytes(packet)).hexdigest())  # type: ignore[arg-type]
    return result  # type: ignore[return-value]


async def viewer(sandbox: Sandbox, url: str, name: str):  # type: ignore[no-untyped-def]
    node = await sandbox.start_client(name, url)
    client = await node.connect_client()
    await client.open()
    token = sandbox.token(str(node.address))
    reply = await client.join(sandbox.cluster_id, token=token)
    assert reply.code == AvrsError.SUCCESS
    return node, client


async def test_viewer_waits_for_publisher_and_gets_every_packet(
    tmp_path: Path, h264_aac_clip: Path
) -> None:
    sandbox = Sandbox(tmp_path)
    server = await sandbox.start_server()
    url = server.urls[0]
    content_id = content_guuid("clip")
    nodes = [server]
    try:
        vnode, vclient = await viewer(sandbox, url, "viewer")
        nodes.append(vnode)
        out = tmp_path / "out.mp4"
        playing = asyncio.create_task(
            play(vclient, sandbox.cluster_id, content_id, FileSink(str(out)), wait=20)
        )
        pnode = await sandbox.start_client("camera", url, certificate=True)
        nodes.append(pnode)
        pclient = await pnode.connect_client()
        await pclient.open()
        # the viewer is already waiting: the content is not declared yet
        assert not playing.done()
        await asyncio.sleep(0)
        stats_sent = None
        # publish only once the viewer is subscribed (it retries attach every <= 0.5 s)
        while not any(
            slot.content.content_id == content_id
            for b in server.service.bindings.values()
            if b.conn.session is not None
            for slot in b.conn.session.contents.values()
        ):
            if not server.directory.info.contents.get(content_id):
                await pclient.add_content(sandbox.cluster_id, content_id, "va")
            await asyncio.sleep(0.02)
        source = FileSource(str(h264_aac_clip))
        stats_sent = await publish(
            pclient, sandbox.cluster_id, content_id, source, realtime=False, declare=True
        )
        stats = await asyncio.wait_for(playing, 30)
        assert stats.forged == 0 and stats.dropped == 0
        assert stats.first_video_keyframe is True
        assert stats.packets == stats_sent.packets - 2  # minus one END per track
        assert packet_hashes(out) == packet_hashes(h264_aac_clip)
    finally:
        for node in reversed(nodes):
            await node.close()


async def test_late_joiner_starts_at_a_keyframe_and_forgery_is_refused(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    server = await sandbox.start_server()
    url = server.urls[0]
    content_id = content_guuid("live")
    nodes = [server]
    try:
        pnode = await sandbox.start_client("camera", url, certificate=True)
        nodes.append(pnode)
        pclient = await pnode.connect_client()
        await pclient.open()
        sent = asyncio.Event()
        count = 0

        def on_packet(_packet: object) -> None:
            nonlocal count
            count += 1
            if count == 50:  # mid-GOP (GOP = 30 video frames + audio)
                sent.set()

        source = PatternSource(width=160, height=120, duration=3.0)
        publishing = asyncio.create_task(
            publish(pclient, sandbox.cluster_id, content_id, source, on_packet=on_packet)
        )
        await asyncio.wait_for(sent.wait(), 20)
        vnode, vclient = await viewer(sandbox, url, "viewer")
        nodes.append(vnode)
        attacker = AvrsSigner(NodeIdentity.generate().private_key)
        injected: list[bytes] = []

        def inject(packet: MediaPacket, _stats: object) -> None:
            """A compromised relay pushes a packet signed by another key and an altered copy
            of a genuine one straight into the node's fan-out."""
            if injected:
                return
            live = server.hub.lives[content_id]
            forged = sign_media(attacker, content_id, 0, 10_000, b"forged", now=time.time(),
                                flags=MediaFlag.KEYFRAME, version=2)  # fmt: skip
            altered = bytearray(packet.envelope)
            altered[60] ^= 0xFF
            for envelope in (forged, bytes(altered)):
                injected.append(envelope)
                live.push(MediaPacket(track=0, data=b"", envelope=envelope, keyframe=True,
                                      arrival=server.hub.clock()))  # fmt: skip

        stats = await play(
            vclient, sandbox.cluster_id, content_id, None, duration=1.0, on_packet=inject
        )
        assert stats.first_video_keyframe is True
        assert stats.forged == 2  # both reached the player's check, neither was used
        assert stats.packets > 10

        # the player reports its experience; the node receives it as a signal
        from dapsdk.avrs.constants import SignalArg
        from dapsdk.avrs.events import SignalReceived
        from dapsdk.services.media.player import report_quality

        reports: list[SignalReceived] = []
        server.service.listeners.append(
            lambda _b, e: reports.append(e) if isinstance(e, SignalReceived) else None
        )
        assert (await report_quality(vclient, stats)).code == AvrsError.SUCCESS
        assert reports and reports[-1].args.uint(SignalArg.DROPPED, 4) == 2
        assert reports[-1].args.uint(SignalArg.STARTUP_MS, 4) == int(stats.startup_ms or 0)

        # a member allowed to publish (SERVER) but not the owner is refused at the node
        other_node = await sandbox.start_client("intruder", url, certificate=True)
        nodes.append(other_node)
        other = await other_node.connect_client()
        await other.open()
        handle = await other.attach(sandbox.cluster_id, content_id, ContentFlag.STREAMING_IN)
        await other.start()
        envelope = sign_media(other.signer, content_id, 0, 0, b"x", now=time.time(), version=2)
        other.send_content(handle, 0, envelope)
        refusal = await other.next_content_error(10)
        assert refusal.code == AvrsError.SIGN_ALIEN
        await asyncio.wait_for(publishing, 20)
    finally:
        for node in reversed(nodes):
            await node.close()


async def test_publisher_above_max_bitrate_is_refused(tmp_path: Path, h264_aac_clip: Path) -> None:
    sandbox = Sandbox(tmp_path)
    path = sandbox.server_config("max_bitrate = 20000\n")
    from dapsdk.node.config import load_node_config
    from dapsdk.node.wiring import build_node

    server = build_node(load_node_config(path))
    await server.start()
    nodes = [server]
    try:
        pnode = await sandbox.start_client("camera", server.urls[0], certificate=True)
        nodes.append(pnode)
        pclient = await pnode.connect_client()
        await pclient.open()
        with pytest.raises(PublishRefused) as refused:
            await publish(pclient, sandbox.cluster_id, content_guuid("big"),
                          FileSource(str(h264_aac_clip)), realtime=False)  # fmt: skip
        assert refused.value.code == AvrsError.CONTENT_BITRATE_EXCEEDED
    finally:
        for node in reversed(nodes):
            await node.close()


async def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition with a deadline (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_encrypted_content_needs_the_content_key(tmp_path: Path, h264_aac_clip: Path) -> None:
    """The envelopes stay signed and routable; only a holder of the content key gets media."""
    from dapsdk.services.media.player import PlayError
    from dapsdk.stream.channel_key import ChannelKey

    sandbox = Sandbox(tmp_path)
    server = await sandbox.start_server()
    url = server.urls[0]
    content_id = content_guuid("secret")
    key = ChannelKey.generate()
    nodes = [server]
    try:
        viewers = []
        for name in ("holder", "keyless", "wrong"):
            node, client = await viewer(sandbox, url, name)
            nodes.append(node)
            viewers.append(client)
        out = tmp_path / "secret.mp4"
        holder = asyncio.create_task(play(viewers[0], sandbox.cluster_id, content_id,
                                          FileSink(str(out)), content_key=key))  # fmt: skip
        keyless = asyncio.create_task(play(viewers[1], sandbox.cluster_id, content_id, None))
        wrong = asyncio.create_task(play(viewers[2], sandbox.cluster_id, content_id, None,
                                         content_key=ChannelKey.generate()))  # fmt: skip
        await wait_until(lambda: server.hub.stats()["waiting"] == 3)
        pnode = await sandbox.start_client("camera", url, certificate=True)
        nodes.append(pnode)
        pclient = await pnode.connect_client()
        await pclient.open()
        await publish(pclient, sandbox.cluster_id, content_id, FileSource(str(h264_aac_clip)),
                      realtime=False, content_key=key)  # fmt: skip
        stats = await asyncio.wait_for(holder, 30)
        assert stats.undecryptable == 0 and stats.forged == 0
        assert packet_hashes(out) == packet_hashes(h264_aac_clip)
        with pytest.raises(PlayError, match="encrypted"):
            await asyncio.wait_for(keyless, 30)
        wrong_stats = await asyncio.wait_for(wrong, 30)
        assert wrong_stats.packets == 0 and wrong_stats.undecryptable == stats.packets
    finally:
        for node in reversed(nodes):
            await node.close()


async def test_vod_pause_resume_and_seek_by_session_requests(
    tmp_path: Path, large_clip: Path
) -> None:
    """STOP pauses, START (+SYNC) resumes at the next packet, START with START_POSITION seeks to
    the keyframe at or before it; nothing is repeated or skipped across a pause. Each delivery
    starts with the content info, which marks where the previous one's packets end."""
    from dapsdk.services.media.model import MediaInfo
    from dapsdk.services.media.player import PlayStats, Receiver, start_playback
    from dapsdk.services.media.publisher import import_file
    from dapsdk.services.media.store import VodStore

    sandbox = Sandbox(tmp_path)
    signer = AvrsSigner(NodeIdentity.generate().private_key)
    item = import_file(VodStore(tmp_path / "avrs-data" / "vod"), str(large_clip), "film", signer)
    server = await sandbox.start_server()
    nodes = [server]
    content_id = content_guuid("film")
    try:
        vnode, client = await viewer(sandbox, server.urls[0], "viewer")
        nodes.append(vnode)
        await client.attach(sandbox.cluster_id, content_id)
        receiver = Receiver(content_id, PlayStats())

        async def until_info(into: list[MediaPacket]) -> None:
            """Collect media packets until the next delivery's content info."""
            while True:
                item = receiver.feed(await client.receive_content(10))
                if isinstance(item, MediaInfo):
                    return
                if isinstance(item, MediaPacket):
                    into.append(item)

        await start_playback(client)
        await until_info([])  # the first delivery's info
        assert receiver.info is not None
        receiver.tracks = receiver.info.tracks_for(None)
        first: list[MediaPacket] = []
        while len(first) < 3:
            got = receiver.feed(await client.receive_content(10))
            if isinstance(got, MediaPacket):
                first.append(got)
        await client.stop()  # pause mid-way (the rest does not fit the flow-control windows)
        await start_playback(client)  # resume
        await until_info(first)  # what was in flight before the pause
        assert len(first) < len(item.packets)  # it really paused before the end
        rest: list[MediaPacket] = []
        while not receiver.done:
            got = receiver.feed(await client.receive_content(10))
            if isinstance(got, MediaPacket):
                rest.append(got)
        played = [(p.track, p.seq) for p in first + rest]
        assert len(played) == len(set(played)) == len(item.packets)  # nothing twice, none lost
        assert receiver.stats.dropped == 0

        receiver.ended.clear()
        await client.stop()
        await start_playback(client, start_us=1_500_000)  # seek
        await until_info([])
        after: list[MediaPacket] = []
        while len(after) < 5:
            got = receiver.feed(await client.receive_content(10))
            if isinstance(got, MediaPacket):
                after.append(got)
        video = [p for p in after if p.track == 0]
        origin = min(p.pts for p in first if p.track == 0)
        # GOP 1 s: the keyframe at or before 1.5 s is the one at 1.0 s
        assert video and video[0].keyframe
        assert abs(video[0].pts - (origin + 1_000_000)) < 50_000
    finally:
        for node in reversed(nodes):
            await node.close()
