"""QUALITY_REPORTs the node received, kept per content in bounded memory for the gateway and
operators (``AvrsService.quality_reports(content_id)``)."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Final

from dapsdk.avrs.constants import SignalArg
from dapsdk.avrs.tsd import TsdList

#: Reports kept per content (the newest); contents kept (the most recently reported).
MAX_REPORTS_PER_CONTENT: Final = 256
MAX_CONTENTS: Final = 1024


@dataclass(frozen=True, slots=True)
class QualityReport:
    received_at: float
    """POSIX seconds when the node received it."""
    session_id: bytes | None
    """The reporting session (None: no session open)."""
    rtt_us: int | None = None
    loss_permille: int | None = None
    jitter_us: int | None = None
    bitrate: int | None = None

    @classmethod
    def from_args(cls, args: TsdList, session_id: bytes | None, now: float) -> QualityReport:
        return cls(
            now,
            session_id,
            args.uint(SignalArg.RTT_US, 4, required=False),
            args.uint(SignalArg.LOSS_PERMILLE, 2, required=False),
            args.uint(SignalArg.JITTER_US, 4, required=False),
            args.uint(SignalArg.BITRATE, 8, required=False),
        )


class QualityStore:
    """Bounded: :data:`MAX_REPORTS_PER_CONTENT` per content, :data:`MAX_CONTENTS` contents (the
    least recently reported content is forgotten first)."""

    def __init__(
        self, *, per_content: int = MAX_REPORTS_PER_CONTENT, contents: int = MAX_CONTENTS
    ) -> None:
        self.per_content = per_content
        self.max_contents = contents
        self._reports: OrderedDict[bytes, deque[QualityReport]] = OrderedDict()

    def add(self, content_id: bytes, report: QualityReport) -> None:
        reports = self._reports.get(content_id)
        if reports is None:
            reports = self._reports[content_id] = deque(maxlen=self.per_content)
            while len(self._reports) > self.max_contents:
                self._reports.popitem(last=False)
        else:
            self._reports.move_to_end(content_id)
        reports.append(report)

    def reports(self, content_id: bytes) -> list[QualityReport]:
        return list(self._reports.get(content_id, ()))

    def __len__(self) -> int:
        return len(self._reports)
