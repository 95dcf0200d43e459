"""The background event loop that the synchronous seed API runs on (started by ``dap_stream_init``).

Callbacks run on this loop's thread, like the C worker thread that owns a stream. Blocking calls
made *from* that thread would deadlock, so they are executed directly when they can be and refused
with a clear error when they must wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..runtime.loop import new_event_loop

T = TypeVar("T")

#: Seconds a blocking compat call waits for the loop before giving up.
DEFAULT_TIMEOUT = 30.0


class LoopThread:
    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dap_stream-loop", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = DEFAULT_TIMEOUT) -> T:
        """Run a coroutine on the loop and wait for its result (not from the loop thread)."""
        if self.in_loop_thread:
            coro.close()
            raise RuntimeError(
                "this blocking dap_stream call was made from a callback on the stream's loop; "
                "use the async API (dapsdk.runtime) inside callbacks"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"dap_stream call did not finish within {timeout} s") from None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the loop thread (directly when already there) and return its result."""
        if self.in_loop_thread:
            return fn(*args)

        async def invoke() -> T:
            return fn(*args)

        return self.run(invoke())

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop_thread:
            self._thread.join(timeout=10)
            self.loop.close()
