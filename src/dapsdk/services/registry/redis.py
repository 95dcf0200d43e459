"""The Redis registry: the cluster's shared state in a Redis server (``redis_url``), with
redis-py's asyncio client. Several machines pointing at the same Redis and cluster form one
cluster.

Keys live under ``avrs:<cluster>:`` (so one Redis can hold several clusters):

============================  =====================================================
``node:<address>``            node record JSON, expires after the heartbeat TTL
``nodes``                     set of node addresses (pruned when a record expired)
``load:<address>``            load report JSON, expires with its node
``contents``                  hash content id -> content record JSON
``carriers:<content>``        set of node addresses carrying the content
``carried``                   set of content ids that have carriers
``members`` / ``revoked``     hash identity -> signed record / signed revocation
``pending``                   hash identity -> join request profile JSON
``qoe``                       list of QoE samples, newest first, trimmed to MAX_QOE
``events`` (pub/sub channel)  cluster events
============================  =====================================================

``rediss://`` URLs use TLS; a user and password in the URL authenticate with Redis ACLs
(docs/operations.md). Any connection failure is raised as :class:`RegistryUnavailable`; the
subscriber reconnects by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import (
    MAX_QOE,
    ClusterEvent,
    ContentRecord,
    EventHandler,
    EventSubscribers,
    LoadReport,
    NodeRecord,
    Registry,
    RegistryUnavailable,
)

log = logging.getLogger("dapsdk.avrs.registry")

T = TypeVar("T")

#: Seconds a Redis command may take before the registry counts as unavailable.
COMMAND_TIMEOUT = 2.0
#: Seconds between reconnection attempts of the event subscriber.
RESUBSCRIBE_DELAY = 0.2


class RedisRegistry(Registry):
    kind = "redis"

    def __init__(self, url: str, cluster: str) -> None:
        self.url = url
        self.prefix = f"avrs:{cluster}:"
        self._client: Any = aioredis.from_url(
            url,
            socket_connect_timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            health_check_interval=5,
        )
        self._events = EventSubscribers()
        self._listener: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        """Set while the event subscription is established."""

    def _key(self, name: str) -> str:
        return self.prefix + name

    async def _run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await asyncio.wait_for(call(), COMMAND_TIMEOUT * 2)
        except (TimeoutError, RedisError, OSError) as exc:
            raise RegistryUnavailable(f"redis {self.url_safe}: {what}: {exc}") from None

    @property
    def url_safe(self) -> str:
        """The URL without its password (never logged)."""
        head, sep, tail = self.url.partition("@")
        if not sep:
            return self.url
        scheme, _, _userinfo = head.partition("://")
        return f"{scheme}://***@{tail}"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.ping()
        if self._listener is None:
            self._listener = asyncio.ensure_future(self._listen())

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            try:
                await listener
            except (asyncio.CancelledError, Exception):
                pass
        self._events.cancel()
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass

    async def ping(self) -> None:
        await self._run("PING", self._client.ping)

    # ------------------------------------------------------------------ nodes and load

    async def put_node(self, record: NodeRecord, ttl: float) -> None:
        async def call() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._key(f"node:{record.address}"), record.to_json(), px=_ms(ttl))
                pipe.sadd(self._key("nodes"), record.address)
                await pipe.execute()

        await self._run("put node", call)

    async def remove_node(self, address: str) -> None:
        async def call() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(f"node:{address}"), self._key(f"load:{address}"))
                pipe.srem(self._key("nodes"), address)
                await pipe.execute()

        await self._run("remove node", call)

    async def nodes(self) -> list[NodeRecord]:
        async def call() -> list[NodeRecord]:
            addresses = sorted(a.decode() for a in await self._client.smembers(self._key("nodes")))
            if not addresses:
                return []
            raws = await self._client.mget([self._key(f"node:{a}") for a in addresses])
            records: list[NodeRecord] = []
            gone: list[str] = []
            for address, raw in zip(addresses, raws, strict=True):
                if raw is None:
                    gone.append(address)
                    continue
                try:
                    records.append(NodeRecord.from_json(raw))
                except (ValueError, TypeError, KeyError):
                    log.warning("ignoring a malformed node record for %s", address)
            if gone:
                await self._client.srem(self._key("nodes"), *gone)
            return records

        return await self._run("list nodes", call)

    async def put_load(self, address: str, load: LoadReport, ttl: float) -> None:
        await self._run(
            "put load",
            lambda: self._client.set(self._key(f"load:{address}"), load.to_json(), px=_ms(ttl)),
        )

    async def loads(self) -> dict[str, LoadReport]:
        async def call() -> dict[str, LoadReport]:
            addresses = sorted(a.decode() for a in await self._client.smembers(self._key("nodes")))
            if not addresses:
                return {}
            raws = await self._client.mget([self._key(f"load:{a}") for a in addresses])
            out: dict[str, LoadReport] = {}
            for address, raw in zip(addresses, raws, strict=True):
                if raw is not None:
                    try:
                        out[address] = LoadReport.from_json(raw)
                    except (ValueError, TypeError):
                        log.warning("ignoring a malformed load report for %s", address)
            return out

        return await self._run("list loads", call)

    # ------------------------------------------------------------------ contents and routes

    async def put_content(self, record: ContentRecord) -> None:
        await self._run(
            "put content",
            lambda: self._client.hset(self._key("contents"), record.content_id, record.to_json()),
        )

    async def remove_content(self, content_id: str) -> None:
        async def call() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key("contents"), content_id)
                pipe.delete(self._key(f"carriers:{content_id}"))
                pipe.srem(self._key("carried"), content_id)
                await pipe.execute()

        await self._run("remove content", call)

    async def contents(self) -> dict[str, ContentRecord]:
        async def call() -> dict[str, ContentRecord]:
            raw = await self._client.hgetall(self._key("contents"))
            out: dict[str, ContentRecord] = {}
            for key, value in raw.items():
                try:
                    out[key.decode()] = ContentRecord.from_json(value)
                except (ValueError, TypeError):
                    log.warning("ignoring a malformed content record")
            return out

        return await self._run("list contents", call)

    async def add_carrier(self, content_id: str, address: str) -> None:
        async def call() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.sadd(self._key(f"carriers:{content_id}"), address)
                pipe.sadd(self._key("carried"), content_id)
                await pipe.execute()

        await self._run("add carrier", call)

    async def remove_carrier(self, content_id: str, address: str) -> None:
        await self._run(
            "remove carrier",
            lambda: self._client.srem(self._key(f"carriers:{content_id}"), address),
        )

    async def carriers(self) -> dict[str, set[str]]:
        async def call() -> dict[str, set[str]]:
            ids = sorted(c.decode() for c in await self._client.smembers(self._key("carried")))
            if not ids:
                return {}
            async with self._client.pipeline(transaction=False) as pipe:
                for content_id in ids:
                    pipe.smembers(self._key(f"carriers:{content_id}"))
                results = await pipe.execute()
            return {
                c: {a.decode() for a in nodes}
                for c, nodes in zip(ids, results, strict=True)
                if nodes
            }

        return await self._run("list carriers", call)

    # ------------------------------------------------------------------ membership

    async def put_member(self, identity: str, blob: bytes) -> None:
        await self._run(
            "put member", lambda: self._client.hset(self._key("members"), identity, blob)
        )

    async def members(self) -> dict[str, bytes]:
        raw = await self._run("list members", lambda: self._client.hgetall(self._key("members")))
        return {k.decode(): bytes(v) for k, v in raw.items()}

    async def put_revocation(self, identity: str, blob: bytes) -> None:
        async def call() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._key("revoked"), identity, blob)
                pipe.hdel(self._key("members"), identity)
                await pipe.execute()

        await self._run("put revocation", call)

    async def revocations(self) -> dict[str, bytes]:
        raw = await self._run(
            "list revocations", lambda: self._client.hgetall(self._key("revoked"))
        )
        return {k.decode(): bytes(v) for k, v in raw.items()}

    async def put_pending(self, identity: str, profile: dict[str, str]) -> None:
        await self._run(
            "put pending",
            lambda: self._client.hset(self._key("pending"), identity, json.dumps(profile)),
        )

    async def remove_pending(self, identity: str) -> None:
        await self._run("remove pending", lambda: self._client.hdel(self._key("pending"), identity))

    async def pending(self) -> dict[str, dict[str, str]]:
        raw = await self._run("list pending", lambda: self._client.hgetall(self._key("pending")))
        out: dict[str, dict[str, str]] = {}
        for key, value in raw.items():
            try:
                profile = json.loads(value)
            except ValueError:
                continue
            if isinstance(profile, dict):
                out[key.decode()] = {str(k): str(v) for k, v in profile.items()}
        return out

    # ------------------------------------------------------------------ QoE

    async def add_qoe(self, sample: dict[str, Any]) -> None:
        async def call() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(self._key("qoe"), json.dumps(sample, sort_keys=True))
                pipe.ltrim(self._key("qoe"), 0, MAX_QOE - 1)
                await pipe.execute()

        await self._run("add qoe", call)

    async def qoe(self, limit: int = MAX_QOE) -> list[dict[str, Any]]:
        raw = await self._run(
            "list qoe", lambda: self._client.lrange(self._key("qoe"), 0, max(0, limit - 1))
        )
        out: list[dict[str, Any]] = []
        for item in raw:
            try:
                value = json.loads(item)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    # ------------------------------------------------------------------ events

    async def publish(self, event: ClusterEvent) -> None:
        await self._run(
            "publish", lambda: self._client.publish(self._key("events"), event.encode())
        )

    def subscribe(self, handler: EventHandler) -> None:
        self._events.add(handler)

    async def _listen(self) -> None:
        """Receive events forever; reconnect after Redis went away."""
        channel = self._key("events")
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self.connected.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("redis %s: event subscription lost: %s", self.url_safe, exc)
                self.connected.clear()
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError, RuntimeError):
                    pass
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    def _deliver(self, raw: bytes) -> None:
        try:
            event = ClusterEvent.decode(raw)
        except (ValueError, TypeError):
            log.warning("ignoring a malformed cluster event")
            return
        self._events.deliver(event)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
