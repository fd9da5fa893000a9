"""Stateful property test: a reader following a Redis state by its notices, while two workers
write, notices are lost and the change log is trimmed.

Invariant: whatever the reader's cursor says, what it holds is exactly the server's state at that
sequence number (never a mix, never out of order), and once notices flow again it reaches the
newest state.
"""

from __future__ import annotations

import copy
import itertools
import os
from typing import Any

import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from broker_guard import RedisStore
from broker_guard.state import records

KEYS = ["SIG/USD", "TOKEN/USD", "A B", '"q"', "\udcff"]
FULL = bool(os.environ.get("BROKER_GUARD_FULL"))
_runs = itertools.count()


class ReaderFollowingNotices(RuleBasedStateMachine):
    url = ""
    prefix = ""

    def __init__(self) -> None:
        super().__init__()
        prefix = f"{self.prefix}-{next(_runs)}"
        self.raw = redis.Redis.from_url(self.url)
        self.writer = RedisStore(self.url, prefix=prefix)
        self.reader = RedisStore(self.url, prefix=prefix)
        self.log_key = f"{prefix}:log:s"
        for store in (self.writer, self.reader):
            assert store.wait_until(lambda s: s.version("s")[0] >= 1, timeout=10)
        self.dropping = False
        take = self.reader._on_message
        self.reader._on_message = lambda m: None if self.dropping else take(m)  # type: ignore[method-assign]
        self.history: list[dict[str, Any]] = [{}]  # the state after each sequence number
        self.cursor, self.view = self.reader.load("s")

    def teardown(self) -> None:
        self.writer.close()
        self.reader.close()
        self.raw.close()

    @rule(
        by_reader=st.booleans(),
        key=st.sampled_from(KEYS),
        value=st.none() | st.integers(0, 3),
    )
    def write(self, by_reader: bool, key: str, value: int | None) -> None:
        def change(doc: dict[str, Any]) -> None:
            records.apply(doc, ("f", key), value)

        store = self.reader if by_reader else self.writer
        store.update("s", change, keys=[("f", key)])
        state = copy.deepcopy(self.history[-1])
        records.apply(state, ("f", key), value)
        if state != self.history[-1]:
            self.history.append(state)

    @rule(
        unseen=st.lists(
            st.tuples(st.sampled_from(KEYS), st.integers(0, 3)), min_size=1, max_size=3
        ),
        trimmed=st.booleans(),
    )
    def changes_whose_notices_are_lost(self, unseen: list[tuple[str, int]], trimmed: bool) -> None:
        """Another worker's changes whose notices never reach the reader; the log that would fill
        the gap may be trimmed too."""
        self.dropping = True
        for key, value in unseen:
            self.write(False, key, value)
        if trimmed:
            self.raw.delete(self.log_key)
        self.dropping = False

    @rule()
    def follow(self) -> None:
        got = self.reader.changes("s", self.cursor)
        if got is None:
            self.cursor, self.view = self.reader.load("s")
            return
        cursor, changes = got
        assert [c.seq for c in changes] == sorted(c.seq for c in changes)
        for change in changes:
            assert change.seq > self.cursor[1]
            records.apply(self.view, change.path, change.value)
        self.cursor = cursor

    @rule()
    def caught_up_once_notices_flow(self) -> None:
        # one more change: its notice fills any gap the lost ones left, or marks the copy stale
        self.write(False, KEYS[-1], 100 + len(self.history))  # never the value it has
        newest = len(self.history) - 1
        assert self.reader.wait_until(lambda s: s.version("s")[1] >= newest, timeout=10)
        self.follow()
        assert self.cursor[1] == newest and self.view == self.history[newest]

    @invariant()
    def the_view_is_the_state_at_its_cursor(self) -> None:
        assert self.view == self.history[self.cursor[1]]


def test_a_reader_following_notices(redis_server: Any, redis_prefix: str) -> None:
    ReaderFollowingNotices.url, ReaderFollowingNotices.prefix = redis_server.url, redis_prefix
    run_state_machine_as_test(
        ReaderFollowingNotices,
        settings=settings(max_examples=200 if FULL else 15, stateful_step_count=30, deadline=None),
    )
