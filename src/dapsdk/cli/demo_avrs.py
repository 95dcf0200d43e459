"""The AVReStream part of ``avrs demo``: a whole cluster in one process on generated content.

A host/server node, a camera (a node with a SERVER certificate from the cluster CA) publishing
H.264 generated with PyAV, and a viewer that joins with an access token, selects the content,
starts, receives every frame, checks the camera's signature on each and decodes the video. A
second viewer with an expired token is refused. Everything (CA, certificates, tokens, INI files)
is generated in a temporary directory.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from ..avrs import AvrsError, MediaFlag, code_token
from ..node.sandbox import Sandbox
from ..services.avrs_cluster import content_guuid
from ..services.avrs_media import parse_signed_media, sign_media
from ..services.media.synthetic import decode_h264, synthetic_h264

CONTENT = "demo-live"
VIDEO_FLOW = 1  # flows "av": 0 audio, 1 video
RECEIVE_TIMEOUT = 10.0


async def run_avrs_demo(frames: int = 60) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="avrs-demo-") as tmp:
        sandbox = Sandbox(Path(tmp))
        server = await sandbox.start_server()
        nodes = [server]
        try:
            url = server.urls[0]
            camera_node, camera, camera_handle = await sandbox.start_publisher(url, CONTENT)
            nodes.append(camera_node)
            viewer_node = await sandbox.start_client("viewer", url)
            nodes.append(viewer_node)
            viewer = await viewer_node.connect_client()
            await viewer.open()
            token = sandbox.token(str(viewer_node.address), content=(CONTENT,))
            joined = await viewer.join(sandbox.cluster_id, token=token)
            if joined.code != AvrsError.SUCCESS:
                raise RuntimeError(f"viewer join refused: {joined.token}")
            content_id = content_guuid(CONTENT)
            await viewer.attach(sandbox.cluster_id, content_id)
            await viewer.start()

            refused = await _expired_viewer(sandbox, url, nodes)

            encoded = list(synthetic_h264(frames))
            started = time.perf_counter()
            for seq, frame in enumerate(encoded):
                flags = MediaFlag.KEYFRAME if frame.keyframe else MediaFlag.NONE
                if seq == len(encoded) - 1:
                    flags |= MediaFlag.END_OF_FLOW
                envelope = sign_media(
                    camera.signer, content_id, VIDEO_FLOW, seq, frame.data,
                    now=time.time(), pts=frame.pts, flags=flags,
                )  # fmt: skip
                camera.send_content(camera_handle, VIDEO_FLOW, envelope, pts=frame.pts, flags=flags)
            received, verified, keyframes = [], 0, 0
            for _ in encoded:
                packet = await viewer.receive_content(RECEIVE_TIMEOUT)
                signed = parse_signed_media(packet.payload)
                if signed is not None and signed.verify() and signed.signer == camera.identity:
                    verified += 1
                    received.append(signed.media)
                keyframes += bool(packet.flags & MediaFlag.KEYFRAME)
            elapsed = time.perf_counter() - started
            pictures = decode_h264(received)
            stream_stats = viewer.stream.get_stats()
            await viewer.close()
            await camera.close()
            return {
                "cluster": sandbox.cluster,
                "server": str(server.address),
                "camera": str(camera_node.address),
                "viewer": str(viewer_node.address),
                "content": CONTENT,
                "frames_published": len(encoded),
                "frames_received": len(received),
                "signatures_verified": verified,
                "keyframes": keyframes,
                "pictures_decoded": len(pictures),
                "picture_size": list(pictures[0]) if pictures else None,
                "video_bytes": sum(len(f.data) for f in encoded),
                "seconds": round(elapsed, 3),
                "expired_token": refused,
                "viewer_avg_latency_ms": round(stream_stats.avg_latency, 3),
            }
        finally:
            for node in reversed(nodes):
                await node.close()


async def _expired_viewer(sandbox: Sandbox, url: str, nodes: list[Any]) -> str:
    """A viewer whose token expired an hour ago: the join is refused with a code and token."""
    node = await sandbox.start_client("late-viewer", url)
    nodes.append(node)
    client = await node.connect_client()
    await client.open()
    stale = sandbox.token(
        str(node.address), content=(CONTENT,), issued=sandbox.now - 7200, ttl=3600
    )
    reply = await client.join(sandbox.cluster_id, token=stale)
    await client.close()
    return f"{code_token(reply.code)} (0x{reply.code:x})"
