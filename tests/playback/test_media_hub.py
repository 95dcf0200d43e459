"""The media hub's live rules on synthetic packets (no IO): GOP cache with matching audio, a
subscriber that never reads stays bounded and restarts at a keyframe, the deadline drops late
media, max_bitrate refuses, a subscriber waits for the publisher."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest

from dapsdk.avrs import AvrsError
from dapsdk.services.media.hub import HubConfig, MediaError, MediaHub, SignedInfo
from dapsdk.services.media.model import MediaInfo, MediaPacket, TrackInfo

CID = b"c" * 16
INFO = MediaInfo(
    (
        TrackInfo("video", "h264", Fraction(1, 90000), width=64, height=64),
        TrackInfo("audio", "aac", Fraction(1, 48000), sample_rate=48000, channels=1),
    )
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def hub_with(config: HubConfig | None = None) -> tuple[MediaHub, Clock]:
    clock = Clock()
    hub = MediaHub(config, clock=clock)
    hub.start_live(CID, SignedInfo(INFO, b"info", b"o" * 32), owner=b"o" * 32)
    return hub, clock


def video(n: int, clock: Clock, *, size: int = 100) -> MediaPacket:
    t = n * 33_333
    return MediaPacket(0, b"v" * size, t, t, 33_333, n % 30 == 0, n, arrival=clock.now)


def audio(n: int, clock: Clock) -> MediaPacket:
    t = n * 21_333
    return MediaPacket(1, b"a" * 10, t, t, 21_333, True, n, arrival=clock.now)


def test_gop_cache_starts_at_latest_keyframe_with_matching_audio() -> None:
    hub, clock = hub_with()
    for n in range(45):  # keyframes at 0 and 30 (t = 1.0 s)
        hub.ingest(CID, video(n, clock))
        hub.ingest(CID, audio(n * 33_333 // 21_333, clock))
    sub = hub.subscribe(CID)
    first = sub.get_nowait()
    assert first is not None and first.track == 0 and first.keyframe and first.seq == 30
    rest = []
    while (p := sub.get_nowait()) is not None:
        rest.append(p)
    audio_ends = [p.time + p.duration for p in rest if p.track == 1]
    assert audio_ends and min(audio_ends) > first.time  # every cached audio packet sounds after
    assert any(p.time <= first.time for p in rest if p.track == 1)  # ... and one spans the key
    assert [p.seq for p in rest if p.track == 0] == list(range(31, 45))


def test_reader_that_never_reads_is_bounded_and_restarts_at_keyframe() -> None:
    hub, clock = hub_with(HubConfig(subscriber_packets=50, subscriber_bytes=10**9))
    sub = hub.subscribe(CID)
    for n in range(1000):
        hub.ingest(CID, video(n, clock))
        assert sub.queued <= 50
    assert sub.skips > 0 and sub.dropped > 900
    first = sub.get_nowait()
    assert first is not None and first.keyframe


def test_late_media_dropped_by_deadline() -> None:
    hub, clock = hub_with(HubConfig(live_deadline=1.0))
    sub = hub.subscribe(CID)
    for n in range(40):
        hub.ingest(CID, video(n, clock))
    clock.now += 2.0  # everything queued is now late
    hub.ingest(CID, video(40, clock))  # fresh, but not a keyframe
    assert sub.get_nowait() is None
    hub.ingest(CID, video(60, clock))  # fresh keyframe
    packet = sub.get_nowait()
    assert packet is not None and packet.seq == 60 and sub.dropped >= 41


def test_max_bitrate_refuses_and_ends_the_content() -> None:
    hub, clock = hub_with(HubConfig(max_bitrate=100_000))
    sub = hub.subscribe(CID)
    with pytest.raises(MediaError) as refused:
        for n in range(100):
            hub.ingest(CID, video(n, clock, size=2000))  # 480 kbit/s
    assert refused.value.code == AvrsError.CONTENT_BITRATE_EXCEEDED
    assert CID not in hub.lives and sub.ended


@pytest.mark.asyncio
async def test_subscriber_waits_for_publisher_then_times_out() -> None:
    hub = MediaHub()
    sub = hub.subscribe(CID)
    waiting = asyncio.create_task(sub.wait_info(5))
    await asyncio.sleep(0)
    hub.start_live(CID, SignedInfo(INFO, b"info", b"o" * 32), owner=b"o" * 32)
    assert (await waiting).info is INFO
    lonely = hub.subscribe(b"x" * 16)
    with pytest.raises(MediaError) as refused:
        await lonely.wait_info(0.05)
    assert refused.value.code == AvrsError.CONTENT_UNAVAILBLE
