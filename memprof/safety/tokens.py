"""Signed tokens for targeted mode: the ``X-Memprof-Profile`` header, made by ``memprof sign``.

A token is ``v1.<expiry>.<path prefix, base64url>.<nonce>.<signature>`` where the signature is
HMAC-SHA256 with ``MEMPROF_TARGETED_SECRET`` over the version, expiry, path prefix and nonce. The prefix
matches whole path segments (:func:`path_matches`: ``/x`` covers ``/x`` and ``/x/...``, never ``/xyz``). The
verifier compares signatures in constant time, allows a bounded clock skew, refuses lifetimes longer
than :data:`MAX_TTL_S`, remembers used nonces (a bounded cache: each token profiles one request per
worker) and rate-limits targeted requests. Every refusal is counted by reason; the request then simply
goes unprofiled. Nothing here stores the header value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

HEADER = b"x-memprof-profile"
VERSION = "v1"
MAX_TTL_S = 86_400
MAX_SKEW_S = 30
MAX_TOKEN_LEN = 512
REPLAY_CACHE_SIZE = 10_000

REASONS = (
    "accepted",
    "missing",
    "malformed",
    "bad_version",
    "forged",
    "expired",
    "ttl_too_long",
    "path",
    "replayed",
    "rate_limited",
    "replay_cache_full",
)


class TokenError(ValueError):
    """A token cannot be made from these arguments (a bad TTL or path prefix)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, expiry: str, path_b64: str, nonce: str) -> str:
    message = f"{VERSION}\n{expiry}\n{path_b64}\n{nonce}".encode("ascii")
    return _b64(hmac.new(secret, message, hashlib.sha256).digest())


def path_matches(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies under it, segment by segment: ``/reports`` covers
    ``/reports`` and ``/reports/2024``, never ``/reports-admin``; ``/`` covers every path."""
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def sign_token(secret: str | bytes, *, ttl: int = 300, path: str = "/", now: float | None = None) -> str:
    """A token valid for ``ttl`` seconds on ``path`` and the paths under it (the bare header value)."""
    if not 1 <= ttl <= MAX_TTL_S:
        raise TokenError(f"the TTL must be between 1 and {MAX_TTL_S} seconds, got {ttl}")
    if not path.startswith("/"):
        raise TokenError(f"the path prefix must start with '/', got {path!r}")
    key = secret.encode() if isinstance(secret, str) else secret
    expiry = str(int((time.time() if now is None else now) + ttl))
    path_b64 = _b64(path.encode("utf-8"))
    nonce = secrets.token_hex(12)
    return ".".join((VERSION, expiry, path_b64, nonce, _signature(key, expiry, path_b64, nonce)))


class RateLimiter:
    """A token bucket: ``rate`` per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def allow(self, now: float) -> bool:
        """Take one token if there is one."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class TokenVerifier:
    """Checks ``X-Memprof-Profile`` headers. One per runtime; thread-safe; bounded."""

    def __init__(
        self,
        secret: str | bytes,
        *,
        rate_per_s: float = 5.0,
        max_skew_s: int = MAX_SKEW_S,
        cache_size: int = REPLAY_CACHE_SIZE,
    ) -> None:
        self._key = secret.encode() if isinstance(secret, str) else secret
        self.max_skew_s = max_skew_s
        self.cache_size = cache_size
        self.counts: Counter[str] = Counter()
        self._nonces: OrderedDict[str, float] = OrderedDict()  # nonce -> wall-clock expiry
        self._limiter = RateLimiter(rate_per_s, max(1.0, 2 * rate_per_s))
        self._lock = threading.Lock()

    def reinit_after_fork(self) -> None:
        """A forked child gets a fresh lock."""
        self._lock = threading.Lock()

    @property
    def cached_nonces(self) -> int:
        """How many used nonces are remembered (bounded by ``cache_size``)."""
        return len(self._nonces)

    def check_scope(self, scope: Mapping[str, Any]) -> bool:
        """Find the header in an ASGI scope's headers and check it; True when the request is profiled."""
        value = None
        for name, raw in scope.get("headers") or ():
            if name == HEADER:
                value = raw
                break
        if value is None:
            self.counts["missing"] += 1
            return False
        return self.check(value, str(scope.get("path", "")))

    def check(self, value: bytes | str, path: str, now: float | None = None) -> bool:
        """True when ``value`` is a valid, fresh, unused token for ``path``; else counts the reason."""
        reason = self._verify(value, path, time.time() if now is None else now)
        self.counts[reason] += 1
        return reason == "accepted"

    def _verify(self, value: bytes | str, path: str, now: float) -> str:
        if len(value) > MAX_TOKEN_LEN:
            return "malformed"
        try:
            text = value.decode("ascii") if isinstance(value, bytes) else value
            version, expiry_s, path_b64, nonce, signature = text.strip().split(".")
        except (UnicodeDecodeError, ValueError):
            return "malformed"
        if version != VERSION:
            return "bad_version"
        if not expiry_s.isdigit() or not nonce or not signature:
            return "malformed"
        expected = _signature(self._key, expiry_s, path_b64, nonce)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
            return "forged"
        expiry = int(expiry_s)
        if now > expiry + self.max_skew_s:
            return "expired"
        if expiry - now > MAX_TTL_S + self.max_skew_s:
            return "ttl_too_long"
        try:
            prefix = _unb64(path_b64).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return "malformed"
        if not path_matches(path, prefix):
            return "path"
        with self._lock:
            if nonce in self._nonces:
                return "replayed"
            if len(self._nonces) >= self.cache_size:
                self._purge(now)
                if len(self._nonces) >= self.cache_size:
                    return "replay_cache_full"
            if not self._limiter.allow(time.monotonic()):
                return "rate_limited"
            self._nonces[nonce] = expiry + self.max_skew_s
        return "accepted"

    def _purge(self, now: float) -> None:
        # Expired nonces can go: their tokens are refused as expired anyway.
        for nonce in [n for n, exp in self._nonces.items() if exp < now]:
            del self._nonces[nonce]

    def status(self) -> dict[str, int]:
        """Counts by reason and the replay cache's size, for ``memprof status``."""
        return {**{r: self.counts[r] for r in REASONS if self.counts[r]}, "cached_nonces": len(self._nonces)}
