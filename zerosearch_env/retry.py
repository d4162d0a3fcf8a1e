"""Retry with exponential back-off: one policy for every HTTP client in the package (tenacity underneath).

An attempt signals a failure worth repeating by raising `TransientError` (`http_errors_are_transient`
and `check_status` turn connection errors, timeouts and HTTP 5xx/408/409/425/429 into one); any other
exception ends the call at once, so an HTTP 4xx (the request itself is wrong) is never retried.
Retry k (k = 0, 1, ...) waits `min(max_s, base_s * 2**k)`, times a factor drawn from
`[1 - jitter, 1 + jitter)`. The call gives up after `max_retries + 1` attempts, or earlier when the
next wait would pass the total budget `total_s`, with `RetriesExhausted` holding every attempt's error.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterator, TypeVar

import httpx
import tenacity

T = TypeVar("T")

#: HTTP statuses besides 5xx that mean "try again later" rather than "the request is wrong"
RETRY_STATUS = frozenset({408, 409, 425, 429})


def is_transient_status(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUS


class TransientError(Exception):
    """One failed attempt worth repeating; `source` (e.g. the URL) prefixes the message when given."""

    def __init__(self, cause: str, source: str = ""):
        super().__init__(f"{source}: {cause}" if source else cause)
        self.cause = cause
        self.source = source


class RetriesExhausted(RuntimeError):
    """Every attempt failed; `errors` holds each attempt's `TransientError` in order."""

    def __init__(self, errors: list[TransientError]):
        n = len(errors)
        super().__init__(f"failed after {n} attempt{'' if n == 1 else 's'}; last error: {errors[-1]}")
        self.errors = errors


@dataclass(frozen=True)
class Backoff:
    """How often and how long to retry (see the module doc)."""

    max_retries: int = 3
    base_s: float = 0.5
    max_s: float = 8.0
    jitter: float = 0.0
    total_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_s < 0 or self.max_s < 0 or not 0 <= self.jitter < 1:
            raise ValueError("need max_retries >= 0, base_s >= 0, max_s >= 0 and 0 <= jitter < 1")
        if self.total_s is not None and self.total_s <= 0:
            raise ValueError("total_s must be > 0 when given")

    def wait_s(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        wait = min(self.max_s, self.base_s * 2**retry)
        return wait * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else wait


@contextlib.contextmanager
def http_errors_are_transient(source: str = "") -> Iterator[None]:
    """Turn httpx timeouts and connection errors raised inside the block into `TransientError`."""
    try:
        yield
    except httpx.TimeoutException as e:
        raise TransientError(f"timed out ({type(e).__name__})", source) from None
    except httpx.TransportError as e:
        raise TransientError(f"connection error: {type(e).__name__}: {e}", source) from None


def check_status(response: httpx.Response, source: str = "", redact: Callable[[str], str] = str) -> httpx.Response:
    """Raise `TransientError` for a status worth retrying; return the response otherwise."""
    if is_transient_status(response.status_code):
        raise TransientError(f"HTTP {response.status_code}: {redact(response.text[:200])!r}", source)
    return response


def _policy(backoff: Backoff, on_retry: Callable[[TransientError], None] | None) -> dict:
    stop = tenacity.stop_after_attempt(backoff.max_retries + 1)
    if backoff.total_s is not None:
        stop = stop | tenacity.stop_before_delay(backoff.total_s)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.outcome.exception())

    return {"stop": stop, "wait": lambda state: backoff.wait_s(state.attempt_number - 1),
            "retry": tenacity.retry_if_exception_type(TransientError), "before_sleep": before_sleep,
            "reraise": False}


def call_with_retries(attempt: Callable[[], T], backoff: Backoff,
                      on_retry: Callable[[TransientError], None] | None = None) -> T:
    """`attempt()` until it returns, raises a non-transient error, or the back-off gives up.

    `on_retry(error)` runs before each wait. Raises `RetriesExhausted` when the retries run out.
    """
    errors: list[TransientError] = []

    def recorded() -> T:
        try:
            return attempt()
        except TransientError as e:
            errors.append(e)
            raise

    try:
        return tenacity.Retrying(**_policy(backoff, on_retry))(recorded)
    except tenacity.RetryError:
        raise RetriesExhausted(errors) from errors[-1]


async def acall_with_retries(attempt: Callable[[], Awaitable[T]], backoff: Backoff,
                             on_retry: Callable[[TransientError], None] | None = None) -> T:
    """The async twin of `call_with_retries` (waits with `asyncio.sleep`)."""
    errors: list[TransientError] = []

    async def recorded() -> T:
        try:
            return await attempt()
        except TransientError as e:
            errors.append(e)
            raise

    try:
        return await tenacity.AsyncRetrying(**_policy(backoff, on_retry))(recorded)
    except tenacity.RetryError:
        raise RetriesExhausted(errors) from errors[-1]
