"""``app_passwords.last_used_at``, written in the background like the verdict record.

A login never waits for it: after an OK with an app password the engine calls
:meth:`LastUsedRecorder.touch` (one dictionary assignment), and a thread writes
what was touched once per :data:`FLUSH_SECONDS`, one UPDATE per app password
(the latest use; an older time never overwrites a newer one, whichever
process writes last). At most :data:`MAX_PENDING` app passwords wait; more are
dropped until the next write. A database error loses that batch (logged), never
a login.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from saslnetauth.logfmt import kv

if TYPE_CHECKING:
    from saslnetauth.store.appadmin import AppPasswordAdmin

__all__ = ["LastUsedRecorder"]

log = logging.getLogger("saslnetauth.record")

FLUSH_SECONDS = 1.0
MAX_PENDING = 100_000


class LastUsedRecorder:
    """Remembers the latest use of each app password; a thread writes them."""

    def __init__(self, store: AppPasswordAdmin, *, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.pending: dict[int, float] = {}
        self.dropped = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saslnetauth-lastused", daemon=True)
        self._thread.start()

    def touch(self, app_id: int, when: float | None = None) -> None:
        """Called by the engine after an OK (from worker threads); never blocks."""
        with self._lock:
            if len(self.pending) >= MAX_PENDING and app_id not in self.pending:
                self.dropped += 1
                return
            self.pending[app_id] = time.time() if when is None else when

    def flush(self) -> None:
        with self._lock:
            if not self.pending:
                return
            batch, self.pending = self.pending, {}
        try:
            self.store.touch_app_passwords(batch)
        except Exception as exc:  # never a login's problem
            log.warning("%s", kv("app password last use lost", rows=len(batch), error=str(exc)))

    def close(self, timeout: float = 5.0) -> None:
        """Write what is pending and stop the writer."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.flush_seconds)
            self.flush()
            if stopping:
                return
