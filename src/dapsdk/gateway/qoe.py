"""Quality of experience: what players report, aggregated per content.

Every player (the web page's HLS and low-latency players, the CLI viewers of ``avrs demo``) posts
a cumulative report for its playback session: startup time, stalls and their total length, the
current rendition and the number of switches, dropped frames, latency behind live and buffer.
The :class:`QoeAggregator` keeps the newest report per player (at most :data:`MAX_PLAYERS`,
forgotten after :data:`PLAYER_IDLE` s), adds the increments to per-content totals, and records a
rolling history: one bucket per :data:`BUCKET_SECONDS` per content, :data:`HISTORY_BUCKETS`
buckets (24 hours), at most :data:`MAX_CONTENTS` contents. Everything is bounded.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

MAX_PLAYERS = 10_000
PLAYER_IDLE = 60.0
BUCKET_SECONDS = 60
HISTORY_BUCKETS = 24 * 3600 // BUCKET_SECONDS
MAX_CONTENTS = 256
_MAX_TEXT = 64


class QoeReportError(ValueError):
    """A report is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class QoeReport:
    content: str
    player: str
    kind: str
    """``hls``, ``low-latency`` or ``cli``."""
    startup_ms: float | None = None
    stalls: int = 0
    stall_ms: float = 0.0
    rendition: str = ""
    switches: int = 0
    dropped_frames: int = 0
    latency_ms: float | None = None
    buffer_s: float | None = None

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> QoeReport:
        def text(name: str, required: bool = False) -> str:
            value = data.get(name, "")
            if not isinstance(value, str) or len(value) > _MAX_TEXT or (required and not value):
                raise QoeReportError(f"{name!r} must be a string of 1..{_MAX_TEXT} characters")
            return value

        def number(name: str, optional: bool = True) -> float | None:
            value = data.get(name)
            if value is None and optional:
                return None
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise QoeReportError(f"{name!r} must be a non-negative number")
            return float(value)

        def count(name: str) -> int:
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise QoeReportError(f"{name!r} must be a non-negative integer")
            return value

        kind = text("kind") or "hls"
        if kind not in ("hls", "low-latency", "cli"):
            raise QoeReportError("'kind' must be hls, low-latency or cli")
        return cls(
            content=text("content", True),
            player=text("player", True),
            kind=kind,
            startup_ms=number("startup_ms"),
            stalls=count("stalls"),
            stall_ms=number("stall_ms") or 0.0,
            rendition=text("rendition"),
            switches=count("switches"),
            dropped_frames=count("dropped_frames"),
            latency_ms=number("latency_ms"),
            buffer_s=number("buffer_s"),
        )


@dataclass(slots=True)
class ContentQoe:
    stalls: int = 0
    stall_ms: float = 0.0
    switches: int = 0
    dropped_frames: int = 0
    reports: int = 0
    history: deque[dict[str, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_BUCKETS))


@dataclass(slots=True)
class _Player:
    report: QoeReport
    seen: float


class QoeAggregator:
    def __init__(self, on_point: Callable[[str, dict[str, float]], None] | None = None) -> None:
        self.players: dict[str, _Player] = {}
        self.contents: dict[str, ContentQoe] = {}
        self.on_point = on_point
        """Called with (content, point) when a one-minute point is complete (the cluster
        registry keeps them)."""

    def add(self, report: QoeReport, now: float) -> None:
        self.expire(now)
        previous = self.players.get(report.player)
        if previous is None and len(self.players) >= MAX_PLAYERS:
            raise QoeReportError("too many players reporting")
        content = self.contents.get(report.content)
        if content is None:
            if len(self.contents) >= MAX_CONTENTS:
                raise QoeReportError("too many contents")
            content = self.contents[report.content] = ContentQoe()
        before = previous.report if previous and previous.report.content == report.content else None
        content.stalls += max(0, report.stalls - (before.stalls if before else 0))
        content.stall_ms += max(0.0, report.stall_ms - (before.stall_ms if before else 0.0))
        content.switches += max(0, report.switches - (before.switches if before else 0))
        content.dropped_frames += max(
            0, report.dropped_frames - (before.dropped_frames if before else 0)
        )
        content.reports += 1
        self.players[report.player] = _Player(report, now)
        self._record(report.content, content, now)

    def expire(self, now: float) -> None:
        for key in [k for k, p in self.players.items() if now - p.seen > PLAYER_IDLE]:
            del self.players[key]

    def summary(self, content_id: str, now: float) -> dict[str, object]:
        players = [p.report for p in self.players.values() if p.report.content == content_id]
        totals = self.contents.get(content_id, ContentQoe())
        return {
            "content": content_id,
            "players": len(players),
            "startup_ms": _mean(r.startup_ms for r in players),
            "latency_ms": _mean(r.latency_ms for r in players),
            "buffer_s": _mean(r.buffer_s for r in players),
            "stalls": totals.stalls,
            "stall_ms": round(totals.stall_ms, 1),
            "rendition_switches": totals.switches,
            "dropped_frames": totals.dropped_frames,
            "renditions": sorted({r.rendition for r in players if r.rendition}),
        }

    def history(self, content_id: str) -> list[dict[str, float]]:
        content = self.contents.get(content_id)
        return list(content.history) if content else []

    def _record(self, content_id: str, content: ContentQoe, now: float) -> None:
        bucket = float(int(now // BUCKET_SECONDS) * BUCKET_SECONDS)
        summary = self.summary(content_id, now)
        point = {
            "t": bucket,
            "players": float(summary["players"]),  # type: ignore[arg-type]
            "latency_ms": float(summary["latency_ms"] or 0.0),  # type: ignore[arg-type]
            "startup_ms": float(summary["startup_ms"] or 0.0),  # type: ignore[arg-type]
            "stalls": float(content.stalls),
            "dropped_frames": float(content.dropped_frames),
        }
        if content.history and content.history[-1]["t"] == bucket:
            content.history[-1] = point
        else:
            if content.history and self.on_point is not None:
                self.on_point(content_id, content.history[-1])
            content.history.append(point)

    def metric_families(self, now: float) -> Iterator[Metric]:
        self.expire(now)
        names = sorted(self.contents)
        startup = GaugeMetricFamily(
            "avrs_qoe_startup_seconds",
            "Mean time to first frame of active players",
            labels=["content"],
        )
        latency = GaugeMetricFamily(
            "avrs_qoe_latency_seconds",
            "Mean latency behind live of active players",
            labels=["content"],
        )
        players = GaugeMetricFamily("avrs_qoe_players", "Players reporting", labels=["content"])
        stalls = CounterMetricFamily("avrs_qoe_stalls", "Playback stalls", labels=["content"])
        stall_s = CounterMetricFamily(
            "avrs_qoe_stall_seconds", "Time spent stalled", labels=["content"]
        )
        switches = CounterMetricFamily(
            "avrs_qoe_rendition_switches", "Rendition switches", labels=["content"]
        )
        dropped = CounterMetricFamily(
            "avrs_qoe_dropped_frames", "Frames dropped by players", labels=["content"]
        )
        for name in names:
            s = self.summary(name, now)
            c = self.contents[name]
            startup.add_metric([name], (float(s["startup_ms"] or 0.0)) / 1000.0)  # type: ignore[arg-type]
            latency.add_metric([name], (float(s["latency_ms"] or 0.0)) / 1000.0)  # type: ignore[arg-type]
            players.add_metric([name], float(s["players"]))  # type: ignore[arg-type]
            stalls.add_metric([name], c.stalls)
            stall_s.add_metric([name], c.stall_ms / 1000.0)
            switches.add_metric([name], c.switches)
            dropped.add_metric([name], c.dropped_frames)
        yield from (startup, latency, players, stalls, stall_s, switches, dropped)


def _mean(values: Iterable[float | None]) -> float | None:
    items = [v for v in values if v is not None]
    return round(sum(items) / len(items), 1) if items else None
