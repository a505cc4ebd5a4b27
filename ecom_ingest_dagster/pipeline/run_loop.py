"""How long a streaming query runs and how it stops, apart from what its batches do.

``query.IngestQuery`` starts Spark's stream and loads each micro-batch; this module owns the
rest of a run's life: its plan (the trigger, when it ends, how a stop request is met), the
timers of a run that lasts (progress reports, the idle stop, the lifetime stop, the sweep for
zero-byte drops that never start a batch) and the stop itself. As dlt's runner keeps its
loop (``while run_func(): sleep()``) apart from the step it repeats.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import signal
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

# A batch in flight when a run ends between batches is waited for at most this long.
STOP_BETWEEN_BATCHES_WAIT_S = 300.0


class IngestStopped(KeyboardInterrupt):
    """A run stopped on request (SIGINT/SIGTERM, Dagster's Terminate)."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """How a run goes: its trigger, when it ends, and how it meets a stop request."""

    mode: str  # "available_now", "continuous" or "warm": recorded with each batch
    # A stop request cancels the batch in flight (its files roll back and wait for the next
    # run) rather than letting it finish: one availableNow batch may hold every pending file.
    stop_mid_batch: bool
    trigger_seconds: float | None = None  # None: availableNow (process what has landed, then end)
    idle_s: float | None = None  # end once no batch has come for this long
    lifetime_s: float | None = None  # end, between batches, once the run is this old
    # A query that has taken this many files is replaced, between batches, by a fresh one
    # (``Ending.FILES``): what Spark's file source remembers grows with every file it lists.
    query_max_files: int | None = None
    on_progress: Callable[[], None] | None = None  # called while batches commit, at most every progress_every_s
    progress_every_s: float = 30.0

    @classmethod
    def available_now(cls, mode: str = "available_now") -> RunPlan:
        return cls(mode, stop_mid_batch=True)

    @property
    def trigger(self) -> dict:
        """Spark's ``DataStreamWriter.trigger`` keyword."""
        if self.trigger_seconds is None:
            return {"availableNow": True}
        return {"processingTime": f"{self.trigger_seconds} seconds"}

    @property
    def lasts(self) -> bool:
        """A run that waits for drops (warm or continuous), not one pass over what has landed."""
        return self.idle_s is not None or not self.stop_mid_batch

    @property
    def on_stop_request(self) -> str:
        return ("stopping now: committed files stay, the rest wait for the next run" if self.stop_mid_batch
                else "finishing the current micro-batch")


class Ending(enum.Enum):
    FINISHED = "the query ended by itself"  # availableNow has taken every file
    REQUESTED = "a stop was requested"
    IDLE = "no drop came for the idle time"
    LIFETIME = "the run reached its lifetime"
    FILES = "the query took its share of files: a fresh one follows"


def supervise(query, plan: RunPlan, stop_event: threading.Event, batch_count: Callable[[], int],
              sweep_zero_bytes: Callable[[], None], sweep_every_s: float,
              files_taken: Callable[[], int] = lambda: 0) -> Ending:
    """Wait on the running ``query`` with the plan's timers until it ends or must; returns why.
    ``files_taken``: the files this query has taken so far (for ``plan.query_max_files``)."""
    began = last_activity = time.monotonic()
    seen = reported = 0
    next_sweep, next_progress = began + sweep_every_s, began + plan.progress_every_s
    while query.isActive and not stop_event.is_set():
        query.awaitTermination(0.2)
        now = time.monotonic()
        if batch_count() != seen:
            seen, last_activity = batch_count(), now
        if plan.on_progress and seen != reported and now >= next_progress:
            plan.on_progress()  # the UI no more than progress_every_s behind
            reported, next_progress = seen, now + plan.progress_every_s
        between_batches = not query.status.get("isTriggerActive")
        if plan.idle_s is not None and now - last_activity >= plan.idle_s and between_batches:
            return Ending.IDLE
        if plan.lifetime_s is not None and now - began >= plan.lifetime_s and between_batches:
            log.info("ending after %.0f s, between batches (the next run takes over)", now - began)
            return Ending.LIFETIME
        if plan.query_max_files is not None and files_taken() >= plan.query_max_files and between_batches:
            log.info("%d files through this query: a fresh one takes over", files_taken())
            return Ending.FILES
        if plan.lasts and now >= next_sweep:
            sweep_zero_bytes()  # a zero-byte drop never starts a micro-batch: recorded between them
            next_sweep = now + sweep_every_s
    return Ending.REQUESTED if stop_event.is_set() and query.isActive else Ending.FINISHED


def stop(query, plan: RunPlan, ending: Ending) -> None:
    """End the query as the plan says: at once on request (``IngestStopped``), else between batches."""
    if query.isActive and plan.stop_mid_batch and ending is Ending.REQUESTED:
        query.stop()  # cancels the batch's tasks; their transactions roll back
        raise IngestStopped("stopped on request: committed files stay, the rest wait for the next run")
    if query.isActive:
        # Between micro-batches, so the summary covers only committed batches (a batch
        # cut short would be replayed, without effect, but counted nowhere).
        deadline = time.monotonic() + STOP_BETWEEN_BATCHES_WAIT_S
        while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
            time.sleep(0.05)
        query.stop()
    if query.exception() is not None:
        raise query.exception()


def install_stop_signals(stop_event: threading.Event, what_happens: str) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop_event`` (logging ``what_happens``); returns the restorer.
    Only the main thread can install handlers; elsewhere (a Dagster step's thread) nothing is."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum, frame):
        log.warning("stop requested (signal %s): %s", signum, what_happens)
        stop_event.set()

    for sig in previous:
        signal.signal(sig, request_stop)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
