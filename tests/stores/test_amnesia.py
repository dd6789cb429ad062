"""Amnesia detection: a shared store that loses its state is noticed through its epoch marker.

Redis: a throwaway ``redis-server`` of the test's own (own port, no persistence) is restarted
or flushed mid-run; SQLite: the database file is deleted under the running store. In every
case ``forgotten_at`` becomes the moment the first operation after the loss ran (the caller's
``now`` where the caller's clock is made up), every process learns it from the marker
(including one that starts afterwards), and a store that never lost anything reports ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog.testing

from chio_middleware.core.errors import ReplayDetected, StateForgotten
from chio_middleware.core.replay import ReplayStore, check_not_forgotten, forgotten_at
from chio_middleware.stores import _common, open_store
from chio_middleware.stores.redis import HOST_AHEAD_S, AsyncRedisReplayStore
from tests.e2e.test_redis_fault import free_port, redis_server

from .conftest import AsyncDriven


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    yield free_port(), tmp_path


def _use(store: ReplayStore, now: float) -> None:
    store.reserve(f"k{now}", expires_at=now + 100, now=now)


def _lose(backend: str, port: int, path: Path) -> None:
    """The loss: FLUSHALL of the private Redis at ``port``, or the SQLite files at ``path``
    deleted."""
    if backend == "redis":
        client = redis.Redis(port=port)
        client.flushall()  # our own throwaway server
        client.close()
    else:
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if name.exists():
                os.unlink(name)


def test_a_redis_restart_without_persistence_is_noticed(private_redis: tuple[int, Path]) -> None:
    port, workdir = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    with redis_server(port, workdir):
        first, second = open_store(url, timeout=2), open_store(url, timeout=2)
        first.reserve("proof", expires_at=500, now=100)
        second.consume("budget", limit=1, expires_at=500, now=100)
        assert forgotten_at(first) is None and forgotten_at(second) is None
    with redis_server(port, workdir):  # the same port, empty: everything was forgotten
        first.reserve("proof", expires_at=500, now=120)  # accepted: Redis forgot it...
        assert forgotten_at(first) == 120  # ...and the store knows
        _use(second, 130)
        assert forgotten_at(second) == 120  # learnt from the marker, not its own clock
        late = open_store(url, timeout=2)  # a worker started after the loss
        _use(late, 140)
        assert forgotten_at(late) == 120
        with pytest.raises(ReplayDetected):  # the new epoch works as usual
            second.reserve("proof", expires_at=500, now=150)
        for store in (first, second, late):
            store.close()


def test_a_flushall_is_noticed_by_the_async_view_too(private_redis: tuple[int, Path]) -> None:
    port, workdir = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    with redis_server(port, workdir):
        store = open_store(url, timeout=2)
        driven = AsyncDriven(store)
        driven.reserve("proof", expires_at=500, now=100)
        _lose("redis", port, workdir)
        driven.reserve("other", expires_at=500, now=110)
        assert forgotten_at(driven.view) == 110 == forgotten_at(store)  # one knowledge
        driven.close()
        store.close()


def test_a_fresh_store_has_not_forgotten(private_redis: tuple[int, Path], tmp_path: Path) -> None:
    port, workdir = private_redis
    with redis_server(port, workdir):
        store = open_store(f"redis://127.0.0.1:{port}/0", timeout=2)
        _use(store, 100)
        assert forgotten_at(store) is None
        store.close()
    sqlite_store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    _use(sqlite_store, 100)
    assert forgotten_at(sqlite_store) is None
    sqlite_store.close()


def test_a_deleted_sqlite_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store, other = open_store(f"sqlite:///{path}"), open_store(f"sqlite:///{path}")
    store.reserve("proof", expires_at=500, now=100)
    _use(other, 101)
    _lose("sqlite", 0, path)
    store.reserve("proof", expires_at=500, now=120)  # a new, empty file: forgotten...
    assert forgotten_at(store) == 120  # ...and noticed
    _use(other, 130)
    assert forgotten_at(other) == 120
    with pytest.raises(ReplayDetected):  # both use the new file
        other.reserve("proof", expires_at=500, now=140)
    late = open_store(f"sqlite:///{path}")
    assert forgotten_at(late) == 120
    for each in (store, other, late):
        each.close()


def test_a_deleted_sqlite_file_alone_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}")
    store.reserve("proof", expires_at=500, now=100)
    os.unlink(path)  # the -wal and -shm files stay behind
    store.reserve("again", expires_at=500, now=120)
    assert forgotten_at(store) == 120
    store.close()


def test_the_loss_is_logged_loudly_once_per_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}")
    _use(store, 100)
    os.unlink(path)
    with structlog.testing.capture_logs() as events:
        for now in range(120, 130):
            _use(store, now)
    forgotten = [e for e in events if e["event"] == "chio_replay_store_forgot_its_state"]
    assert len(forgotten) == 1
    assert forgotten[0]["log_level"] == "error" and forgotten[0]["forgotten_at"] == 120
    store.close()


# Every history of up to three worker processes around one loss of a Redis store's state:
# each opened with Redis up ("seeing": it reads the marker as it opens) or down ("blind"),
# each used or not before the loss, the loss happening or not, an optional process started
# after the loss that operates first, and the orders in which the others then operate (all
# of them for two processes, four for three: 876 stories in all).
_Story = tuple[tuple[str, ...], tuple[bool, ...], bool, bool, tuple[int, ...]]


def _stories() -> Iterator[_Story]:
    for n in (1, 2, 3):
        orders = list(itertools.permutations(range(n)))
        if n == 3:
            orders = [(0, 1, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
        for modes in itertools.product(("blind", "seeing"), repeat=n):
            for used in itertools.product((False, True), repeat=n):
                for loss, late in ((False, False), (True, False), (True, True)):
                    for order in orders:
                        yield modes, used, loss, late, order


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    """The loss, for one prefix: what a restart without persistence or an eviction does."""
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def test_no_history_of_workers_around_a_loss_accepts_a_proof_again(
    private_redis: tuple[int, Path],
) -> None:
    """The class of the two-worker finding (a worker that could not read the marker as it
    started took an emptied Redis for a new one, and accepted proofs again). A proof is
    accepted as the middleware does it: its reservation succeeds, and its ``issued_at`` is
    after the store's ``forgotten_at``. After a loss, no process accepts a proof reserved
    before it, except in the documented limit: a process started after the loss creates a
    fresh marker, and until a process that knew the old epoch operates and stamps it, it and
    the processes that never knew an epoch cannot tell (README, "Amnesia detection"). Without
    a loss, a store is reported forgotten only when a blind process made its marker."""
    port, workdir = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    stories = list(_stories())
    # The blind processes open their store while Redis is down: one prefix per story.
    blind = {
        (s, i): open_store(url, timeout=1, key_prefix=f"s{s}:")
        for s, (modes, *_rest) in enumerate(stories)
        for i, mode in enumerate(modes)
        if mode == "blind"
    }
    with redis_server(port, workdir):
        client = redis.Redis(port=port)
        for s, (modes, used, loss, late, order) in enumerate(stories):
            prefix, story = f"s{s}:", (modes, used, loss, late, order)
            stores = [
                blind[s, i] if mode == "blind" else open_store(url, timeout=1, key_prefix=prefix)
                for i, mode in enumerate(modes)
            ]
            knew = [mode == "seeing" or use for mode, use in zip(modes, used, strict=True)]
            issued: dict[str, float] = {}
            for i, store in enumerate(stores):
                if used[i]:
                    issued[f"proof{i}"] = 100.0 + i
                    store.reserve(f"proof{i}", expires_at=10_000, now=100.0 + i)
            if not loss:
                for i, store in enumerate(stores):
                    _use(store, 300.0 + i)
                made_by_blind = "seeing" not in modes
                expected = {forgotten_at(store) for store in stores}
                if made_by_blind:  # the first operation of a blind process made the marker
                    assert expected == {min(issued.values(), default=300.0)}, story
                else:
                    assert expected == {None}, story
            else:
                _delete_prefix(client, prefix)
                now, knowing_operated = 200.0, False
                if late:
                    newcomer = open_store(url, timeout=1, key_prefix=prefix)
                    stores.append(newcomer)
                    newcomer.reserve("fresh", expires_at=10_000, now=now)
                for i in order:
                    for key, at in issued.items():
                        now += 1
                        try:
                            stores[i].reserve(key, expires_at=10_000, now=now)
                        except ReplayDetected:
                            continue
                        forgot = forgotten_at(stores[i])
                        accepted = forgot is None or at > forgot
                        excused = late and not knowing_operated and not knew[i]
                        assert not accepted or excused, (story, i, key)
                    now += 1
                    _use(stores[i], now)
                    knowing_operated = knowing_operated or knew[i]
                # Once every process has operated, all of them know the moment of the loss.
                for j, store in enumerate(stores, start=1):
                    _use(store, now + j)
                assert len({forgotten_at(store) for store in stores}) == 1, story
                # Stamped by the first process that knew the old epoch, or by a blind one
                # that found no marker; not when only a newcomer and processes that never knew
                # an epoch were there (the documented limit).
                assert (forgotten_at(stores[0]) is not None) == (any(knew) or not late), story
            for store in stores:
                store.close()
        client.close()


def test_a_blind_store_s_async_view_takes_a_missing_marker_for_a_lost_one(
    private_redis: tuple[int, Path],
) -> None:
    port, workdir = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    blind = open_store(url, timeout=1)  # Redis is down as it opens
    with redis_server(port, workdir):
        driven = AsyncDriven(blind)
        driven.reserve("proof", expires_at=500, now=110)
        assert forgotten_at(driven.view) == 110 == forgotten_at(blind)
        seeing = open_store(url, timeout=1)  # opened now: it learns the moment from the marker
        _use(seeing, 120)
        assert forgotten_at(seeing) == 110
        driven.close()
        blind.close()
        seeing.close()


def test_an_async_store_built_alone_takes_a_missing_marker_for_a_lost_one(
    private_redis: tuple[int, Path],
) -> None:
    """Built without a sync store's watch, the async store reads no marker as it opens: idle
    before a flush, it must not take the emptied Redis for a new one (found by a review)."""
    port, workdir = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    with redis_server(port, workdir):
        seeing = open_store(url, timeout=1)
        seeing.reserve("proof", expires_at=500, now=100)
        loop = asyncio.new_event_loop()
        alone = AsyncRedisReplayStore(url, timeout=1)
        _lose("redis", port, workdir)
        loop.run_until_complete(alone.reserve("proof", expires_at=500, now=120))
        assert forgotten_at(alone) == 120  # the proof's reservation was accepted, but noticed
        loop.run_until_complete(alone.aclose())
        loop.close()
        seeing.close()


# The noticing host's wall clock minus the store's and the other hosts' (20 s behind, level,
# 5 s ahead, 10 minutes ahead: past HOST_AHEAD_S), and how long before its store call the
# noticing request took its now (negative: its clock runs ahead of the wall clock). Outside reviews found stamps taken from that now,
# from it past a 30 s window, and from a host's clock with Redis' counted only 3 s past it,
# each of which let a proof erased by the loss be accepted again.
_CLOCK_OFFSETS = (-20.0, 0.0, 5.0, 600.0)
_REQUEST_AGES = (0.0, 0.01, 2.0, 29.0, 31.0, 3600.0, -2.0)
_TIMEOUT = 1.0


class _WallClock:
    """``time`` for the stores' shared module: the app host's wall clock, ``offset`` from the
    store's (this host's, which Redis' TIME reads)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_a_loss_is_stamped_no_earlier_than_the_noticing_call_was_made(
    backend: str, private_redis: tuple[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the request's age (a body sent slowly, slow guards, a wait for the store) and
    however the noticing host's clock differs from the store's and the other hosts', a proof
    a worker accepted before the loss is refused afterwards, as the middleware checks it; and
    the stamp is no later than the latest of the clocks involved, so fresh proofs are refused
    for no longer than the clock that runs ahead is ahead."""
    port, workdir = private_redis
    path = tmp_path / "s.db"
    url = f"redis://127.0.0.1:{port}/0" if backend == "redis" else f"sqlite:///{path}"
    offsets = _CLOCK_OFFSETS if backend == "redis" else (0.0,)  # SQLite: the host's clock
    with redis_server(port, workdir) if backend == "redis" else contextlib.nullcontext():
        for offset, age in itertools.product(offsets, _REQUEST_AGES):
            case = (offset, age)
            wall = _WallClock(offset)
            monkeypatch.setattr(_common, "time", wall)
            noticing, other = open_store(url, timeout=_TIMEOUT), open_store(url, timeout=_TIMEOUT)
            _use(noticing, wall.time())
            # Just before the loss, proofs accepted by a host on the store's clock and by one
            # on the noticing host's.
            issued = {"proof-true": time.time(), "proof-noticing": wall.time()}
            for key, at in issued.items():
                other.reserve(key, expires_at=at + 100, now=at)
            _lose(backend, port, path)
            made, before = wall.time(), time.time()
            caller_now = made - age
            noticing.reserve("mine", expires_at=made + 100, now=caller_now)
            latest = max(caller_now, wall.time(), time.time())
            stamp = forgotten_at(noticing)
            assert stamp is not None, case
            if offset > HOST_AHEAD_S:  # the noticing host's clock counts up to the limit
                assert before + HOST_AHEAD_S - 1e-6 <= stamp <= time.time() + HOST_AHEAD_S, case
                del issued["proof-noticing"]  # a client as far ahead: refused as future-dated
            else:
                assert max(caller_now, made) - 1e-6 <= stamp <= latest + 1e-6, (case, stamp)
            for key, at in issued.items():
                # The erased proof's reservation succeeds (the store forgot it)...
                other.reserve(key, expires_at=latest + 100, now=latest)
                # ...but it was issued before the moment the loss was noticed: refused.
                with pytest.raises(StateForgotten):
                    check_not_forgotten(other, int(at), what="proof", guard="dpop")
            # A proof issued after the stamp is accepted.
            check_not_forgotten(other, int(stamp) + 1, what="proof", guard="dpop")
            assert forgotten_at(other) == stamp, case  # every worker learns the same moment
            noticing.close()
            other.close()
            monkeypatch.undo()
            _lose(backend, port, path)  # the next case starts afresh


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_with_a_made_up_clock_the_stamp_is_the_caller_s_now(
    backend: str, private_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, workdir = private_redis
    path = tmp_path / "s.db"
    url = f"redis://127.0.0.1:{port}/0" if backend == "redis" else f"sqlite:///{path}"
    with redis_server(port, workdir) if backend == "redis" else contextlib.nullcontext():
        store = open_store(url, timeout=_TIMEOUT)
        _use(store, 100.0)
        _lose(backend, port, path)
        _use(store, 120.0)
        assert forgotten_at(store) == 120.0  # not Redis' TIME, nor this host's clock
        store.close()
