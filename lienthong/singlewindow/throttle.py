"""Back-off for clients that keep presenting wrong API keys: after `threshold` failures from one client address
(counted until the client has been quiet for `window` seconds after its last failure or wait), every request
from it is refused (429 with Retry-After) for `backoff` seconds, doubled with each further failure up to
`backoff_max`; a right key resets it.

The state is in-process (per worker) and bounded: at most `max_clients` addresses are tracked, the least
recently failing forgotten first. Written by hand: the rate-limit libraries (limits, slowapi) count requests in
windows; none backs off exponentially on failures and forgets on success.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 10_000


@dataclass
class _Client:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


class FailureThrottle:
    def __init__(self, threshold: int, window: float, backoff: float, backoff_max: float,
                 max_clients: int = MAX_CLIENTS, clock: Callable[[], float] = time.monotonic):
        self.threshold, self.window, self.backoff, self.backoff_max = threshold, window, backoff, backoff_max
        self.max_clients, self._clock = max_clients, clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds `client` must still wait before it may try a key again (0: it may now)."""
        with self._lock:
            state = self._clients.get(client)
            return max(0.0, state.blocked_until - self._clock()) if state else 0.0

    def failed(self, client: str) -> tuple[int, float]:
        """Count a wrong or missing key from `client`; returns its failures in a row and the wait now imposed."""
        now = self._clock()
        with self._lock:
            state = self._clients.pop(client, None) or _Client()
            if now - max(state.last_failure, state.blocked_until) > self.window:  # quiet since its wait ended
                state = _Client()
            state.failures += 1
            state.last_failure = now
            wait = 0.0
            if state.failures >= self.threshold:
                wait = min(self.backoff_max, self.backoff * 2.0 ** min(state.failures - self.threshold, 60))
                state.blocked_until = now + wait
            self._clients[client] = state  # most recent last
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
            return state.failures, wait

    def succeeded(self, client: str) -> None:
        """A right key from `client`: its count starts again."""
        if self._clients:  # read without the lock: the common case (nobody failing) costs nothing
            with self._lock:
                self._clients.pop(client, None)

    def __len__(self) -> int:
        return len(self._clients)
