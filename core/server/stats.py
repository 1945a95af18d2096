"""Per-command timing statistics (SPEC 5): count, errors, mean, p50, p95, p99, max latency."""

from __future__ import annotations

import math
from collections import deque

SAMPLES = 4096  # latest latencies kept per command for the percentiles


class CommandStats:
    __slots__ = ("count", "errors", "max_ms", "samples", "total_ms")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.samples: deque[float] = deque(maxlen=SAMPLES)

    def record(self, ms: float, ok: bool) -> None:
        self.count += 1
        self.errors += not ok
        self.total_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms
        self.samples.append(ms)

    def summary(self) -> dict:
        ordered = sorted(self.samples)
        return {
            "count": self.count,
            "errors": self.errors,
            "mean_ms": round(self.total_ms / self.count, 3) if self.count else 0.0,
            "p50_ms": round(percentile(ordered, 50), 3),
            "p95_ms": round(percentile(ordered, 95), 3),
            "p99_ms": round(percentile(ordered, 99), 3),
            "max_ms": round(self.max_ms, 3),
            "total_ms": round(self.total_ms, 3),
        }


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile of sorted values (nearest rank); 0 for no values."""
    if not ordered:
        return 0.0
    rank = math.ceil(p / 100 * len(ordered))  # the nearest-rank method
    return ordered[min(len(ordered), max(1, rank)) - 1]


class Stats:
    def __init__(self) -> None:
        self.commands: dict[str, CommandStats] = {}

    def record(self, cmd: str, ms: float, ok: bool) -> None:
        stats = self.commands.get(cmd)
        if stats is None:
            stats = self.commands[cmd] = CommandStats()
        stats.record(ms, ok)

    def summary(self) -> dict[str, dict]:
        """Per command, busiest (by total time) first."""
        rows = {cmd: s.summary() for cmd, s in self.commands.items()}
        return dict(sorted(rows.items(), key=lambda kv: -kv[1]["total_ms"]))

    @property
    def requests(self) -> int:
        return sum(s.count for s in self.commands.values())
