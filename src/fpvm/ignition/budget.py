"""What one boot may spend on fetching, shared by the resource layer and the http transport.

Its own module so that ``fpvm.ignition.http`` (which spends it) and ``fpvm.ignition.resources`` (which
imports http only for http/https URLs) do not import each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["DEFAULT_DEADLINE", "MAX_RESOURCE_BYTES", "Budget"]

MAX_RESOURCE_BYTES = 64 * 1024 * 1024  # per resource, after decompression
DEFAULT_DEADLINE = 300.0  # seconds of fetching in one boot, all resources together


class Budget:
    """What one boot may spend on fetching: one deadline for all resources together.

    Upstream Ignition bounds each resource by ``timeouts.httpTotal`` (default: no limit), so N dead
    URLs cost N deadlines. Here the time spent in network fetches is added up and shared by every
    fetch that holds this object (``FetchOptions.budget``, ``resolve(budget=)``,
    ``PlanOptions(budget=)``); ``httpTotal`` still bounds each resource within it. Only fetching is
    counted (not parsing or planning between fetches). ``attempts`` counts the requests made, so
    callers and tests can see what was spent; ``clock`` is injectable.
    """

    def __init__(
        self, deadline: float | None = DEFAULT_DEADLINE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.deadline = deadline  # seconds; None: no overall limit
        self.clock = clock
        self.spent = 0.0  # seconds in finished fetches
        self.fetches = 0  # network fetches begun (one per http(s) resource)
        self.attempts = 0  # network requests started (every retry and redirect hop counts)
        self._since: float | None = None  # start of the fetch under way

    def begin(self) -> None:
        """A network fetch starts: its time counts from now (data: URLs never spend any)."""
        self.fetches += 1
        self._since = self.clock()

    def end(self) -> None:
        """The fetch under way is over (done or failed): its time joins ``spent``."""
        if self._since is not None:
            self.spent += self.clock() - self._since
            self._since = None

    def elapsed(self) -> float:
        """Seconds spent fetching so far, the fetch under way included."""
        running = 0.0 if self._since is None else self.clock() - self._since
        return self.spent + running

    def remaining(self) -> float | None:
        """Seconds of fetching left for the whole boot; None when there is no deadline."""
        if self.deadline is None:
            return None
        return self.deadline - self.elapsed()

    def attempt(self) -> None:
        """Record one network request."""
        self.attempts += 1
