"""Retry policy for agency calls: exponential backoff with jitter that honours Retry-After.

Built on tenacity (a well-kept library) rather than a hand-rolled loop; only the wait strategy that reads
Retry-After from the raised error is ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from connectors.base.errors import TransientSourceError

log = logging.getLogger(__name__)
T = TypeVar("T")


class wait_retry_after_or_backoff(wait_base):  # noqa: N801 (tenacity's naming style)
    """Wait what the server asked for (Retry-After), else exponential backoff with jitter."""

    def __init__(self, initial: float = 0.5, max_wait: float = 30.0):
        self.backoff = wait_exponential_jitter(initial=initial, max=max_wait, jitter=initial)
        self.max_wait = max_wait

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_wait)
        return self.backoff(retry_state)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "transient fault, retry %d after %.2fs: %s", state.attempt_number, state.next_action.sleep if state.next_action else 0, exc
    )


def retrying(attempts: int = 6, max_wait: float = 30.0, initial: float = 0.5) -> Retrying:
    """A tenacity Retrying for transient agency faults; the last error is re-raised as is."""
    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_retry_after_or_backoff(initial=initial, max_wait=max_wait),
        retry=retry_if_exception_type(TransientSourceError),
        before_sleep=_log_retry,
        reraise=True,
    )


def call_with_retry(fn: Callable[[], T], attempts: int = 6, max_wait: float = 30.0, initial: float = 0.5) -> T:
    return retrying(attempts, max_wait, initial)(fn)
