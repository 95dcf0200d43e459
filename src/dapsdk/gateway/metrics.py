"""Prometheus ``/metrics``: one :class:`~prometheus_client.CollectorRegistry` per gateway.

Everything is read at scrape time from the live state (no duplicated counters): the stream node's
connections and their statistics, the AVRS sessions, the gateway's contents and renditions, the
HLS cache counters, REST/stream refusals and the quality reports of players. CPU and memory come
from prometheus-client's :class:`~prometheus_client.ProcessCollector` (``process_*`` families).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .service import GatewayState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class HttpCounters:
    """Counters the HTTP handlers update (bounded: fixed label sets)."""

    bytes_out: int = 0
    requests: int = 0
    cache_hits: int = 0
    """HLS objects served from the in-memory window (including 304s)."""
    cache_misses: int = 0
    """HLS objects asked for but gone from the window or never produced."""
    refusals: dict[str, int] = field(default_factory=dict)
    """AVRS error token -> refusals answered by the gateway."""

    def refuse(self, token: str) -> None:
        if token in self.refusals or len(self.refusals) < 64:
            self.refusals[token] = self.refusals.get(token, 0) + 1


class GatewayCollector(Collector):
    def __init__(self, state: Callable[[], GatewayState]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        s = self._state()
        now = time.time()
        s.refresh_viewers()
        node = s.node
        streams = list(node.stream_node.streams.values()) if node is not None else []
        stats = [st.get_stats() for st in streams]
        tp = CounterMetricFamily(
            "avrs_throughput_bytes", "Bytes moved by this node", labels=["direction", "transport"]
        )
        tp.add_metric(["in", "stream"], sum(x.bytes_received for x in stats))
        tp.add_metric(["out", "stream"], sum(x.bytes_sent for x in stats))
        tp.add_metric(["out", "http"], s.http.bytes_out)
        yield tp
        packets = CounterMetricFamily(
            "avrs_packets", "dap_stream packets moved by this node", labels=["direction"]
        )
        packets.add_metric(["in"], sum(x.packets_received for x in stats))
        packets.add_metric(["out"], sum(x.packets_sent for x in stats))
        yield packets
        rtts = [x.avg_latency / 1000.0 for x in stats if x.avg_latency > 0]
        lat = GaugeMetricFamily(
            "avrs_stream_latency_seconds", "Mean keepalive round-trip time over open streams"
        )
        lat.add_metric([], sum(rtts) / len(rtts) if rtts else 0.0)
        yield lat
        dropped = sum(b.dropped for b in s.bindings())
        sent = sum(r.samples for c in s.catalog.list() for r in c.renditions.values())
        lost = CounterMetricFamily(
            "avrs_media_packets_dropped",
            "Media packets not delivered (congested viewers skipped, subscriber queues cut)",
        )
        skipped = sum(
            sub.skipped
            for c in s.catalog.list()
            for r in c.renditions.values()
            for sub in r.subscribers
        )
        lost.add_metric([], dropped + skipped)
        yield lost
        loss = GaugeMetricFamily(
            "avrs_packet_loss_ratio", "Dropped media packets over media packets handled"
        )
        loss.add_metric([], (dropped + skipped) / max(1, sent + dropped + skipped))
        yield loss
        conns = GaugeMetricFamily("avrs_connections", "Open connections", labels=["kind"])
        conns.add_metric(["stream"], len(streams))
        conns.add_metric(["websocket_live"], s.catalog.ws_viewers)
        yield conns
        sessions = GaugeMetricFamily("avrs_sessions", "Open AVRS sessions")
        sessions.add_metric([], len(node.service.sessions) if node is not None else 0)
        yield sessions
        cache = CounterMetricFamily(
            "avrs_cache_requests", "HLS objects requested", labels=["cache", "result"]
        )
        cache.add_metric(["hls", "hit"], s.http.cache_hits)
        cache.add_metric(["hls", "miss"], s.http.cache_misses)
        yield cache
        ratio = GaugeMetricFamily("avrs_cache_hit_ratio", "Hits over requests", labels=["cache"])
        total = s.http.cache_hits + s.http.cache_misses
        ratio.add_metric(["hls"], s.http.cache_hits / total if total else 1.0)
        yield ratio
        viewers = GaugeMetricFamily(
            "avrs_content_viewers", "Viewers per content", labels=["content", "type"]
        )
        bitrate = GaugeMetricFamily(
            "avrs_ingest_bitrate_bps", "Bits per second packaged", labels=["content", "rendition"]
        )
        lag = GaugeMetricFamily(
            "avrs_transcode_lag_seconds",
            "Publication to packaged fragment, newest fragment",
            labels=["content", "rendition"],
        )
        for c in s.catalog.list():
            viewers.add_metric([c.id, str(c.type)], c.viewers + c.stream_viewers)
            for r in c.renditions.values():
                bitrate.add_metric([c.id, r.name], r.hls.bandwidth if r.samples else 0)
                lag.add_metric([c.id, r.name], r.last_packaged_lag)
        yield viewers
        yield bitrate
        yield lag
        refusals = CounterMetricFamily(
            "avrs_refusals", "Requests refused, by AVRS error code", labels=["code"]
        )
        for token, count in sorted(s.http.refusals.items()):
            refusals.add_metric([token], count)
        yield refusals
        yield from s.qoe.metric_families(now)


def build_registry(state: Callable[[], GatewayState]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(GatewayCollector(state))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
