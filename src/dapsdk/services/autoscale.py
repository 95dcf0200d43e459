"""The auto-scaling signal of a balancer: when the live servers' average load crosses
configured thresholds, run a command or POST to a webhook, so an orchestrator (or the demo's
script) starts or stops server nodes.

:func:`decide` is pure; :class:`AutoScaler` adds the cooldown (no signal more often than
``cooldown`` seconds, and never the same one twice while the condition lasts) and the action,
run one at a time (a signal that arrives while one is running waits for the next evaluation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Final

import aiohttp

from dapsdk.avrs.constants import Role

from .cluster_sync import ClusterState

log = logging.getLogger("dapsdk.avrs.autoscale")

#: Seconds a scaling command or webhook may take.
ACTION_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class ScaleSignal:
    direction: str
    """``up`` or ``down``."""
    servers: int
    mean_sessions: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "scale": self.direction,
                "servers": self.servers,
                "mean_sessions": round(self.mean_sessions, 3),
            }
        )


def decide(state: ClusterState, *, up: int | None, down: int | None) -> ScaleSignal | None:
    """``up`` when the live, non-draining servers average more than ``up`` sessions (or there is
    none while ``up`` is set), ``down`` when they average fewer than ``down`` and there are at least
    two (the last server is never scaled away)."""
    servers = [n for n in state.nodes.values() if n.roles & Role.SERVER and not n.draining]
    sessions = [
        (state.loads[n.address].sessions if n.address in state.loads else 0) for n in servers
    ]
    mean = sum(sessions) / len(sessions) if sessions else 0.0
    if up is not None and (not servers or mean > up):
        return ScaleSignal("up", len(servers), mean)
    if down is not None and len(servers) >= 2 and mean < down:
        return ScaleSignal("down", len(servers), mean)
    return None


class AutoScaler:
    def __init__(
        self,
        *,
        up: int | None,
        down: int | None,
        command: tuple[str, ...] | None = None,
        webhook: str | None = None,
        cooldown: float = 30.0,
    ) -> None:
        if command is None and webhook is None:
            raise ValueError("a scaling signal needs scale_command or scale_webhook")
        self.up, self.down = up, down
        self.command, self.webhook = command, webhook
        self.cooldown = cooldown
        self.emitted: list[ScaleSignal] = []
        """Signals sent (newest last, the last 100)."""
        self._last: tuple[str, float] | None = None
        self._running: asyncio.Task[None] | None = None

    def check(self, state: ClusterState) -> ScaleSignal | None:
        """Evaluate ``state``; start the action when a signal is due. Returns the signal sent."""
        signal = decide(state, up=self.up, down=self.down)
        now = time.monotonic()
        if signal is None:
            self._last = None  # the condition ended: the same signal may come again
            return None
        if self._last is not None and (
            self._last[0] == signal.direction or now - self._last[1] < self.cooldown
        ):
            return None
        if self._running is not None and not self._running.done():
            return None
        self._last = (signal.direction, now)
        self.emitted = [*self.emitted[-99:], signal]
        log.info(
            "scale %s: %d servers average %.1f sessions",
            signal.direction,
            signal.servers,
            signal.mean_sessions,
        )
        self._running = asyncio.ensure_future(self._emit(signal))
        return signal

    async def _emit(self, signal: ScaleSignal) -> None:
        try:
            if self.command is not None:
                await self._run_command(signal)
            if self.webhook is not None:
                await self._post(signal)
        except Exception as exc:  # an orchestrator failure must not stop the balancer
            log.warning("scaling signal %s failed: %s", signal.direction, exc)

    async def _run_command(self, signal: ScaleSignal) -> None:
        assert self.command is not None
        env = dict(
            os.environ,
            AVRS_SCALE=signal.direction,
            AVRS_SERVERS=str(signal.servers),
            AVRS_MEAN_SESSIONS=f"{signal.mean_sessions:.3f}",
        )
        proc = await asyncio.create_subprocess_exec(
            *self.command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            code = await asyncio.wait_for(proc.wait(), ACTION_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise TimeoutError(f"scale_command ran longer than {ACTION_TIMEOUT:g} s") from None
        if code != 0:
            log.warning("scale_command exited with %d", code)

    async def _post(self, signal: ScaleSignal) -> None:
        assert self.webhook is not None
        timeout = aiohttp.ClientTimeout(total=ACTION_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                self.webhook,
                data=signal.to_json(),
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            if response.status >= 300:
                log.warning("scale_webhook answered %d", response.status)

    async def close(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
