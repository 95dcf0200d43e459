"""HLS from the gateway, read by real clients: ffprobe on the live and VoD master playlists and
every rendition, LL-HLS blocking reload, and the cache headers a CDN relies on."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from dapsdk.gateway.testsrc import write_test_clip
from dapsdk.services.avrs_cluster import content_guuid
from dapsdk.services.media.publisher import publish
from dapsdk.services.media.source import FileSource

from .conftest import GatewayEnv, wait_until


async def _ffprobe(url: str) -> dict:  # type: ignore[type-arg]
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height:program=program_id",
        "-of", "json", url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)  # type: ignore[no-any-return]


async def test_ffprobe_reads_live_master_and_every_rendition(env: GatewayEnv) -> None:
    master = await _ffprobe(f"{env.url}/hls/live1/master.m3u8")
    sizes = {(s["width"], s["height"]) for s in master["streams"]}
    assert sizes == {(640, 360), (320, 180)}
    assert all(s["codec_name"] == "h264" for s in master["streams"])
    for name, size in (("360p", (640, 360)), ("180p", (320, 180))):
        probe = await _ffprobe(f"{env.url}/hls/live1/{name}/index.m3u8")
        assert [(s["width"], s["height"]) for s in probe["streams"]] == [size]


async def test_ffprobe_reads_vod_master_and_rendition(env: GatewayEnv) -> None:
    master = await _ffprobe(f"{env.url}/hls/vod1/master.m3u8")
    assert [(s["width"], s["height"]) for s in master["streams"]] == [(480, 270)]
    async with env.http.get(f"{env.url}/hls/vod1/270p/index.m3u8") as r:
        text = await r.text()
    assert "#EXT-X-ENDLIST" in text and "#EXT-X-PLAYLIST-TYPE:VOD" in text
    assert len(re.findall(r"^seg\d+\.m4s$", text, re.M)) == 3  # 3 s clip, 1 s GOP


async def test_master_lists_renditions_with_bandwidth_resolution_codecs(env: GatewayEnv) -> None:
    async with env.http.get(f"{env.url}/hls/live1/master.m3u8") as r:
        text = await r.text()
        assert r.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    infs = re.findall(
        r"#EXT-X-STREAM-INF:BANDWIDTH=(\d+),RESOLUTION=(\d+x\d+),CODECS=\"(avc1\.[0-9a-f]{6})\"",
        text,
    )
    assert {res for _, res, _ in infs} == {"640x360", "320x180"}
    assert "360p/index.m3u8" in text and "180p/index.m3u8" in text


async def test_ll_hls_playlist_has_parts_and_blocking_reload_waits_for_the_part(
    env: GatewayEnv,
) -> None:
    base = f"{env.url}/hls/live1/180p/index.m3u8"
    async with env.http.get(base) as r:
        text = await r.text()
    assert "CAN-BLOCK-RELOAD=YES" in text and "#EXT-X-PART-INF:PART-TARGET=" in text
    assert "#EXT-X-PART:DURATION=" in text and "#EXT-X-PRELOAD-HINT:TYPE=PART" in text
    hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="part(\d+)\.(\d+)\.m4s"', text)
    assert hint
    msn, part = int(hint.group(1)), int(hint.group(2))
    assert f'part{msn}.{part}.m4s"' not in text.split("PRELOAD-HINT")[0]
    started = time.monotonic()
    async with env.http.get(f"{base}?_HLS_msn={msn}&_HLS_part={part}") as r:
        assert r.status == 200
        blocked = await r.text()
    waited = time.monotonic() - started
    assert f'URI="part{msn}.{part}.m4s"' in blocked.split("PRELOAD-HINT")[0]
    assert waited < 5.0  # answered when the part appeared, not at the block timeout
    # the preload-hinted part itself is served
    async with env.http.get(f"{env.url}/hls/live1/180p/part{msn}.{part}.m4s") as r:
        assert r.status == 200 and (await r.read())[4:8] == b"moof"
    # a request too far in the future is refused at once
    async with env.http.get(f"{base}?_HLS_msn={msn + 50}") as r:
        assert r.status == 400
        assert (await r.json(content_type=None))["token"] == "CONTENT_UNAVAILBLE"


async def test_cache_headers_and_etag_revalidation(env: GatewayEnv) -> None:
    seg_url = f"{env.url}/hls/vod1/270p/seg0.m4s"
    async with env.http.get(seg_url) as r:
        assert r.status == 200
        assert "immutable" in r.headers["Cache-Control"] and "private" in r.headers["Cache-Control"]
        etag = r.headers["ETag"]
        body = await r.read()
    assert body[4:8] == b"moof"
    async with env.http.get(seg_url, headers={"If-None-Match": etag}) as r:
        assert r.status == 304
    async with env.http.get(f"{env.url}/hls/live1/180p/index.m3u8") as r:
        assert r.headers["Cache-Control"] == "private, max-age=1"
    async with env.http.get(f"{env.url}/hls/live1/180p/init.mp4") as r:
        assert (await r.read())[4:8] == b"ftyp" and r.headers["ETag"]


async def test_unknown_content_and_rendition_are_refused(env: GatewayEnv) -> None:
    async with env.http.get(f"{env.url}/hls/nope/master.m3u8") as r:
        assert r.status == 404 and (await r.json(content_type=None))["token"] == "CONTENT_NOT_FOUND"
    async with env.http.get(f"{env.url}/hls/live1/9999p/index.m3u8") as r:
        assert (await r.json(content_type=None))["token"] == "CONTENT_FLOW_WRONG_ID"
    async with env.http.get(f"{env.url}/hls/live1/180p/index.m3u8?_HLS_msn=abc") as r:
        assert r.status == 400


async def test_avcc_media_from_an_mp4_file_is_packaged_too(env: GatewayEnv, tmp_path: Path) -> None:
    """An MP4 remuxed live (length-prefixed samples, avcC extradata) goes through
    h264_mp4toannexb and plays like the encoder's Annex B."""
    assert env.gateway.feed is not None
    guuid = env.gateway.feed.name("fromfile")
    clip = await asyncio.to_thread(write_test_clip, tmp_path / "file.mp4", seconds=3)
    source = FileSource(str(clip))
    node2 = await env.sandbox.start_client("camera2", env.node.urls[0], certificate=True)
    camera2 = await node2.connect_client()
    await camera2.open()
    cert = (env.sandbox.root / "camera2.crt").read_bytes()
    assert (await camera2.join(env.sandbox.cluster_id, certificate=cert)).code == 0
    publishing = asyncio.ensure_future(publish(camera2, env.sandbox.cluster_id, guuid, source))
    await wait_until(
        lambda: (
            "fromfile" in env.gateway.catalog.contents
            and any(
                len(r.hls.segments) >= 2
                for r in env.gateway.catalog.contents["fromfile"].renditions.values()
            )
        )
    )
    probe = await _ffprobe(f"{env.url}/hls/fromfile/master.m3u8")
    assert [(s["width"], s["height"]) for s in probe["streams"]] == [(480, 270)]
    await publishing
    source.close()
    await camera2.close()
    await node2.close()


async def test_content_listed_by_id_is_found_by_its_publishers_name(
    env: GatewayEnv, tmp_path: Path
) -> None:
    """Content the gateway knows only by its wire id (an RTMP stream key, `avrs publish --content
    NAME`) is served at /hls/NAME/ too, the name hashed to the id as avrs-protocol.md §11 says."""
    guuid = content_guuid("by-name")
    clip = await asyncio.to_thread(write_test_clip, tmp_path / "named.mp4", seconds=3)
    source = FileSource(str(clip))
    node3 = await env.sandbox.start_client("camera3", env.node.urls[0], certificate=True)
    camera3 = await node3.connect_client()
    await camera3.open()
    cert = (env.sandbox.root / "camera3.crt").read_bytes()
    assert (await camera3.join(env.sandbox.cluster_id, certificate=cert)).code == 0
    publishing = asyncio.ensure_future(publish(camera3, env.sandbox.cluster_id, guuid, source))
    contents = env.gateway.catalog.contents
    await wait_until(
        lambda: (
            guuid.hex() in contents
            and any(len(r.hls.segments) >= 2 for r in contents[guuid.hex()].renditions.values())
        )
    )
    assert "by-name" not in contents
    probe = await _ffprobe(f"{env.url}/hls/by-name/master.m3u8")
    assert [(s["width"], s["height"]) for s in probe["streams"]] == [(480, 270)]
    await publishing
    source.close()
    await camera3.close()
    await node3.close()
