"""Rebuild a projection from the event store into scratch tables, then swap
them in: reads keep working on the old tables until the swap."""

from __future__ import annotations

import gc
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager

from adapters.eventstore import EventLog
from adapters.readmodels import HeldCopy, ReadModelStore, ReadModelTx, Scratch
from projections.base import Projection
from projections.projector import apply_batch

Progress = Callable[[int, int], None]  # (position reached, head)
WRITE_EVERY = 60.0  # seconds between writes of a rebuild's copy: what an interruption can lose
Target = tuple[Projection, ReadModelStore]  # a projection and the store it is kept in
# Opens, in a worker process, the log and every projection with its store, by
# name. Picklable (a module-level function, or a partial of one with settings).
Opener = Callable[[], tuple[EventLog, Mapping[str, Target]]]


def rebuild(projection: Projection, store: ReadModelStore, log: EventLog, *, fresh: bool = False,
            batch: int = 5000, progress: Progress | None = None, write_every: float = WRITE_EVERY) -> int:
    """Returns the position the rebuilt projection is at. Resumes an
    interrupted rebuild unless `fresh`."""
    return rebuild_together([(projection, store)], log, fresh=fresh, batch=batch, progress=progress,
                            write_every=write_every)[projection.name]


def rebuild_together(targets: Sequence[Target], log: EventLog, *, fresh: bool = False, batch: int = 5000,
                     progress: Progress | None = None, write_every: float = WRITE_EVERY) -> dict[str, int]:
    """Rebuilds several projections from one read of the log (reading and
    decoding events costs more than most projections' work), then swaps
    each in; returns each one's position. Each resumes where its own
    interrupted rebuild last wrote its copy (`replay`)."""
    starts = [store.start_rebuild(p.name, p.tables, fresh=fresh) for p, store in targets]
    replay(targets, log, min(starts), log.head, scratch=True, batch=batch, progress=progress,
           write_every=write_every)
    return {p.name: store.swap(p.name, p.tables, catch_up_from(p, log, batch)) for p, store in targets}


def rebuild_in_processes(opener: Opener, groups: Sequence[Sequence[str]], *, workers: int, fresh: bool = False,
                         batch: int = 5000, progress: Callable[[str, int, int], None] | None = None) -> dict[str, int]:
    """Rebuilds each group of named projections in a process of its own
    (`rebuild_together`: one read of the log for the group), `workers` at a
    time (the next one starts as one ends), and returns each projection's
    position. Rebuilding is Python work bound to one core per process, so
    this is what puts a second core to use; each process reads just its
    projections' events (`plan_processes` groups them). `progress(name,
    position, head)` is called in this process. Each group resumes, swaps
    in and fails on its own, as `rebuild_together` does; the first failure
    is raised once the others have stopped."""
    context = multiprocessing.get_context("spawn")  # no inherited connections or threads
    updates = context.Queue()

    def drain() -> None:
        while True:
            try:
                update = updates.get_nowait()
            except queue.Empty:
                return
            if progress:
                progress(*update)

    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(groups))), mp_context=context,
                             initializer=_open_worker, initargs=(opener, updates)) as pool:
        futures = [pool.submit(_rebuild_in_worker, tuple(group), fresh, batch) for group in groups]
        pending: set = set(futures)
        try:
            while pending and not any(_failure(f) for f in futures):
                _, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
                drain()
        finally:
            pool.shutdown(cancel_futures=True)  # the ones running finish (each can resume anyway)
            drain()
    for f in futures:
        if (error := _failure(f)) is not None:
            raise error
    return {name: position for f in futures for name, position in f.result().items()}


def _failure(future: Future) -> BaseException | None:
    return None if not future.done() or future.cancelled() else future.exception()


def plan_processes(names: Sequence[str], projections: Mapping[str, Projection],
                   counts: Mapping[str, int], workers: int) -> list[list[str]]:
    """Groups of `names` for `rebuild_in_processes`, at most `workers` of
    them, by how many events of the log each projection reads: taken the
    most first, each projection joins the group that reads fewest so far
    (longest processing time first), so the processes end close together.
    A group reads the log once for all its projections: a small projection
    beside a large one decodes its few events from pages read anyway, where
    alone its rebuild would be mostly reading past the events it skips."""
    reads = {n: sum(counts.get(t, 0) for t in projections[n].event_types) for n in names}
    groups: list[list[str]] = [[] for _ in range(min(max(workers, 1), len(names)))]
    load = [0] * len(groups)
    for name in sorted(names, key=lambda n: -reads[n]):
        lightest = min(range(len(groups)), key=load.__getitem__)
        groups[lightest].append(name)
        load[lightest] += reads[name]
    return groups


_worker: dict[str, object] = {}  # in a worker process: what `_open_worker` opened


def _open_worker(opener: Opener, updates: object) -> None:
    _worker["log"], _worker["targets"] = opener()
    _worker["updates"] = updates


def _rebuild_in_worker(names: tuple[str, ...], fresh: bool, batch: int) -> dict[str, int]:
    log, targets, updates = _worker["log"], _worker["targets"], _worker["updates"]

    def progress(position: int, head: int) -> None:
        for name in names:
            updates.put((name, position, head))  # type: ignore[attr-defined]

    return rebuild_together([targets[name] for name in names], log, fresh=fresh, batch=batch,  # type: ignore[index]
                            progress=progress)  # type: ignore[arg-type]


def replay(targets: Sequence[Target], log: EventLog, position: int, target: Callable[[], int],
           *, scratch: Scratch, batch: int = 5000, progress: Progress | None = None,
           write_every: float = WRITE_EVERY) -> int:
    """Applies the log from `position` to `target()` into a copy of each
    projection's tables and returns the position reached. Each copy is held
    in memory (`HeldCopy`) and written to its tables every `write_every`
    seconds and at the end, with its position: an interrupted replay
    resumes from the last write (events at or below a copy's position are
    skipped). Only the kinds of events the targets read are fetched and
    decoded. Bulk, then one more pass for what arrived meanwhile: each pass
    stops at the target seen when it began, so sustained writes cannot keep
    it from finishing; the last few are applied under the live lock
    (`swap`, `compare`) by `catch_up_from`."""
    types = frozenset().union(*(p.event_types for p, _ in targets))
    held = [(p, store, store.read_copy(p.name, p.tables, scratch)) for p, store in targets if _holds(store)]
    direct = [(p, store) for p, store in targets if not _holds(store)]
    with _young_collections_only():
        return _replay(held, direct, log, types, position, target, scratch, batch, progress, write_every)


def _replay(held: list[tuple[Projection, ReadModelStore, HeldCopy]], direct: Sequence[Target], log: EventLog,
            types: frozenset[str], position: int, target: Callable[[], int], scratch: Scratch, batch: int,
            progress: Progress | None, write_every: float) -> int:
    written = time.monotonic()
    for _ in range(2):
        head = target()
        # the next window is read and decoded while this one is applied
        for events, end in _prefetched(log, types, position, head, batch):
            for projection, _, copy in held:
                apply_batch(projection, copy, events)
                if end > copy.position:
                    copy.set_position(end)
            for projection, store in direct:  # (the feed graph: a transaction per window)
                with store.transaction(projection.name, scratch=scratch) as tx:
                    apply_batch(projection, tx, events)
                    if end > tx.position:
                        tx.set_position(end)
            position = end
            if time.monotonic() - written >= write_every:
                for projection, store, copy in held:
                    store.write_copy(projection.name, copy, scratch)
                gc.collect(1)  # what a minute left behind (a cycle, say), without walking the rows held
                written = time.monotonic()
            if progress:
                progress(position, head)
    for projection, store, copy in held:
        store.write_copy(projection.name, copy, scratch)
    return position


@contextmanager
def _young_collections_only() -> Iterator[None]:
    """Python's cycle collector off for the bulk of a rebuild (young objects
    collected at each write of the copies instead): every so often it walks
    every object alive, and a held copy is millions of them, none in a
    cycle. It cost 12-17% of a rebuild's CPU on a million events."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _holds(store: object) -> bool:
    """Whether a store's copies can be held in memory (`ReadModelStore`s can;
    the feed graph's store is written window by window)."""
    return hasattr(store, "read_copy")


def catch_up_from(projection: Projection, log: EventLog, batch: int = 5000) -> Callable[[ReadModelTx, int, int], None]:
    """The `catch_up(tx, frm, to)` that `swap` and `compare` call under the lock."""

    def catch_up(tx: ReadModelTx, frm: int, to: int) -> None:
        for events, end in windows(log, projection.event_types, frm, to, batch):
            apply_batch(projection, tx, events)
            tx.flush()  # type: ignore[attr-defined]
            if end > frm:
                tx.set_position(end)

    return catch_up


def windows(log: EventLog, types: frozenset[str], after: int, upto: int, batch: int) -> Iterator[tuple[list, int]]:
    """(events, end) for consecutive windows (at, end] of the log up to
    `upto`: the events of `types` in each. A window spans `batch` positions,
    and grows while the wanted events are sparse, up to 64 times that."""
    at, span = after, batch
    while at < upto:
        end = min(at + span, upto)
        events = log.scan(at, end, types)
        yield events, end
        at = end
        span = min(span * 2, batch * 64) if len(events) < batch // 2 else batch


def _prefetched(log: EventLog, types: frozenset[str], after: int, upto: int, batch: int) -> Iterator[tuple[list, int]]:
    """`windows`, read one window ahead in a thread."""
    pages: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()

    def read() -> None:
        try:
            for page in windows(log, types, after, upto, batch):
                if stop.is_set():
                    return
                pages.put(page)
            pages.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            pages.put(e)

    reader = threading.Thread(target=read, name="rebuild-reader", daemon=True)
    reader.start()
    try:
        while True:
            page = pages.get()
            if isinstance(page, BaseException):
                raise page
            if page is done:
                return
            yield page
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                pages.get_nowait()
            except queue.Empty:
                reader.join(0.05)
