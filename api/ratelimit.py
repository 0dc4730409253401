"""Rate limiting: a token bucket per name (an API key, or a client address before its key is
known), in memory of this API process."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per name: ``rate`` requests per second, bursts up to ``burst``.

    At most ``max_buckets`` buckets are kept, the least recently used dropped first, so
    callers rotating names (addresses, made-up keys) cannot grow the memory without bound.
    """

    rate: float
    burst: int
    max_buckets: int = 50_000
    refused: int = 0  # requests told to wait, since the start
    _buckets: dict[str, _Bucket] = field(default_factory=dict)  # insertion order: LRU first

    def take(self, key: str, now: float) -> float:
        """0 when the request may go ahead, else the seconds to wait."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            while len(self._buckets) >= self.max_buckets:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket  # most recently used last
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        self.refused += 1
        return (1 - bucket.tokens) / self.rate

    def refund(self, key: str) -> None:
        """Give back the token of a request that turned out not to count (a valid key)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1)

    def __len__(self) -> int:
        return len(self._buckets)
