"""Live transcoding off the event loop, with a bounded backlog and lag reporting.

:class:`LiveTranscoder` wraps a :class:`~.transcode.MediaPipeline` for one live content. Copied
tracks are emitted at once (the source never waits for the encoders). Packets that need codec work
queue for one worker task that runs :meth:`MediaPipeline.encode` in the loop's executor (the
node's ``thread_pool_size`` pool), so encoding never blocks the event loop.

When the CPU cannot keep up the backlog reaches ``max_backlog`` packets: new video packets are
then dropped until the next source keyframe (a decoder cannot resume mid-GOP) and audio packets
are dropped one by one. Every drop is counted, and the transcode lag (how long the oldest packet
waited before encoding started) is measured; above ``lag_warning`` seconds a warning is logged
(at most every ``warn_interval`` seconds) and ``stats()`` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Final

from .model import MediaPacket
from .transcode import MediaPipeline

log = logging.getLogger("dapsdk.media.transcode")

DEFAULT_MAX_BACKLOG: Final = 300
DEFAULT_LAG_WARNING: Final = 1.0


@dataclass(frozen=True, slots=True)
class TranscodeStats:
    backlog: int
    lag: float
    """Seconds the packet being encoded now waited (0 when idle)."""
    max_lag: float
    dropped: int
    lagging: bool
    """The lag is above the warning threshold, or packets were dropped in the last interval."""
    speeds: dict[str, float]
    """× real time per output encoder."""

    def as_dict(self) -> dict[str, object]:
        return {
            "backlog": self.backlog,
            "lag_s": round(self.lag, 3),
            "max_lag_s": round(self.max_lag, 3),
            "dropped": self.dropped,
            "lagging": self.lagging,
            "speed_x_realtime": {k: round(v, 2) for k, v in self.speeds.items()},
        }


class LiveTranscoder:
    def __init__(
        self,
        pipeline: MediaPipeline,
        emit: Callable[[MediaPacket], None],
        *,
        name: str = "",
        executor: Executor | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        lag_warning: float = DEFAULT_LAG_WARNING,
        warn_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_backlog < 1:
            raise ValueError("max_backlog must be at least 1")
        self.pipeline = pipeline
        self._emit = emit
        self.name = name
        self._executor = executor
        self.max_backlog = max_backlog
        self.lag_warning = lag_warning
        self.warn_interval = warn_interval
        self._clock = clock
        self._queue: asyncio.Queue[tuple[MediaPacket, float] | None] = asyncio.Queue()
        self._backlog = 0
        self._skipping: set[int] = set()
        self._video_tracks = set(pipeline.source.video_tracks)
        self.dropped = 0
        self.lag = 0.0
        self.max_lag = 0.0
        self._last_warning = -1e9
        self._last_drop = -1e9
        self._worker = asyncio.create_task(self._run(), name=f"transcode-{name}")
        self.error: BaseException | None = None

    def submit(self, packet: MediaPacket) -> None:
        """Emit ``packet``'s copies now and queue its codec work (or drop it: see module doc)."""
        for out in self.pipeline.copy(packet):
            self._emit(out)
        if not self.pipeline.encodes(packet.track) or self.error is not None:
            return
        track = packet.track
        is_video = track in self._video_tracks
        if track in self._skipping:
            if not packet.keyframe:
                self._drop()
                return
            self._skipping.discard(track)
        if self._backlog >= self.max_backlog:
            self._drop()
            if is_video:
                self._skipping.add(track)
            return
        self._backlog += 1
        self._queue.put_nowait((packet, self._clock()))

    def _drop(self) -> None:
        self.dropped += 1
        now = self._clock()
        self._last_drop = now
        self._warn(now, f"backlog of {self._backlog} packets full; {self.dropped} dropped")

    def _warn(self, now: float, what: str) -> None:
        if now - self._last_warning >= self.warn_interval:
            self._last_warning = now
            log.warning("transcoder %s cannot keep up: %s", self.name, what)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            if item is None:
                return
            packet, queued = item
            now = self._clock()
            self.lag = now - queued
            self.max_lag = max(self.max_lag, self.lag)
            if self.lag > self.lag_warning:
                self._warn(now, f"lag {self.lag:.2f} s behind the source")
            try:
                outputs = await loop.run_in_executor(self._executor, self.pipeline.encode, packet)
            except Exception as exc:
                self.error = exc
                log.error("transcoder %s failed: %s", self.name, exc)
                return
            finally:
                self._backlog -= 1
            self.lag = 0.0
            for out in outputs:
                self._emit(out)

    async def finish(self) -> None:
        """Encode what is queued, flush the encoders, emit the rest, release the codecs."""
        loop = asyncio.get_running_loop()
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        try:
            if self.error is None:
                for out in await loop.run_in_executor(self._executor, self.pipeline.flush):
                    self._emit(out)
        finally:
            self.pipeline.close()

    async def abort(self) -> None:
        """Stop without flushing: queued packets are discarded; waits for a running encode."""
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                self._backlog -= 1
        self._queue.put_nowait(None)
        with contextlib.suppress(BaseException):
            await self._worker
        self.pipeline.close()

    def stats(self) -> TranscodeStats:
        now = self._clock()
        return TranscodeStats(
            backlog=self._backlog,
            lag=self.lag,
            max_lag=self.max_lag,
            dropped=self.dropped,
            lagging=self.lag > self.lag_warning or now - self._last_drop < self.warn_interval,
            speeds={k: v.speed for k, v in self.pipeline.stats.encoders.items()},
        )
