"""Playback (HLS, low-latency WebSocket) is authorised like a stream-protocol SUBSCRIBE, on a node
whose config file sets ``loopback_no_credentials = false``: real ffprobe and aiohttp clients
without a token, with a ``?token=`` / bearer token, and with tokens that lack the grant."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from dapsdk.services.auth import Role, TokenGrants

from .conftest import GatewayEnv


async def _ffprobe(url: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
        "-of", "json", url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def _token(env: GatewayEnv, **grants: object) -> str:
    return env.sandbox.issuer.issue(
        "viewer", TokenGrants(role=Role.CLIENT, **grants), now=time.time(), ttl=600
    )


async def _problem(env: GatewayEnv, url: str, **kwargs: object) -> tuple[int, str]:
    async with env.http.get(url, **kwargs) as r:  # type: ignore[arg-type]
        assert r.headers["Content-Type"].startswith("application/problem+json")
        return r.status, (await r.json(content_type=None))["token"]


async def test_no_token_is_refused_with_401_and_the_avrs_code(strict_env: GatewayEnv) -> None:
    env = strict_env
    base = f"{env.url}/hls/live1"
    for path in ("master.m3u8", "180p/index.m3u8", "180p/init.mp4", "180p/seg0.m4s"):
        assert await _problem(env, f"{base}/{path}") == (401, "SIGN_NOT_PRESENT"), path
    status, token = await _problem(env, f"{base}/master.m3u8?token=not-a-token")
    assert (status, token) == (401, "MEMBER_SECURITY_ISSUE")
    code, _, err = await _ffprobe(f"{base}/master.m3u8")
    assert code != 0 and "401" in err
    # the low-latency WebSocket: the handshake is refused, no media is sent
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with env.http.ws_connect(f"{env.url}/live/live1/180p"):
            pass
    assert refused.value.status == 401
    # the watch page itself is static; only its media is guarded
    async with env.http.get(f"{env.url}/watch/live1") as r:
        assert r.status == 200


async def test_subscribe_token_in_the_query_plays_with_ffprobe(strict_env: GatewayEnv) -> None:
    env = strict_env
    token = _token(env, subscribe=True, content_ids="*")
    master_url = f"{env.url}/hls/live1/master.m3u8?token={token}"
    async with env.http.get(master_url) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"].startswith("private")
        master = await r.text()
    assert f"180p/index.m3u8?token={token}" in master and f"360p/index.m3u8?token={token}" in master
    async with env.http.get(f"{env.url}/hls/live1/180p/index.m3u8?token={token}") as r:
        media = await r.text()
    assert f'#EXT-X-MAP:URI="init.mp4?token={token}"' in media
    assert f".m4s?token={token}" in media and "\nseg" in media
    assert all(
        line.endswith(f"?token={token}") for line in media.splitlines() if line.startswith("seg")
    )
    code, out, err = await _ffprobe(master_url)
    assert code == 0, err
    assert "h264" in out
    code, out, err = await _ffprobe(f"{env.url}/hls/live1/180p/index.m3u8?token={token}")
    assert code == 0 and '"height": 180' in out, err
    # the same token as a bearer header; its playlists then carry no token in their URIs
    async with env.http.get(
        f"{env.url}/hls/live1/180p/index.m3u8", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 200 and "token=" not in await r.text()
    # and on the low-latency WebSocket: the init segment arrives
    async with env.http.ws_connect(f"{env.url}/live/live1/180p?token={token}") as ws:
        msg = await asyncio.wait_for(ws.receive_bytes(), 20)
    head_len = int.from_bytes(msg[:4], "big")
    assert b'"init": true' in msg[4 : 4 + head_len]


async def test_tokens_without_the_grant_get_403(strict_env: GatewayEnv) -> None:
    env = strict_env
    no_subscribe = _token(env, publish=True, content_ids="*")
    other_content = _token(env, subscribe=True, content_ids=("vod1",))
    for token in (no_subscribe, other_content):
        status, code = await _problem(env, f"{env.url}/hls/live1/master.m3u8?token={token}")
        assert (status, code) == (403, "MEMBER_GRANT_DENIED")
        status, code = await _problem(
            env, f"{env.url}/hls/live1/180p/seg0.m4s", headers={"Authorization": f"Bearer {token}"}
        )
        assert (status, code) == (403, "MEMBER_GRANT_DENIED")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with env.http.ws_connect(f"{env.url}/live/live1/180p?token={token}"):
                pass
        assert refused.value.status == 403
    # the content-limited token does play the content it names
    async with env.http.get(f"{env.url}/hls/vod1/master.m3u8?token={other_content}") as r:
        assert r.status == 200
    code, _, err = await _ffprobe(f"{env.url}/hls/vod1/master.m3u8?token={other_content}")
    assert code == 0, err


async def test_loopback_plays_without_a_token_by_default(env: GatewayEnv) -> None:
    """The default ``loopback_no_credentials = true``: loopback viewers need no token (and still
    get ``private`` caching, since other addresses need one)."""
    async with env.http.get(f"{env.url}/hls/live1/master.m3u8") as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "private, max-age=5"
