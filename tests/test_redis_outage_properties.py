"""Stateful property test: a guard on a Redis store whose link is cut and healed at random, beside
another worker that stays connected.

Invariants: an entry order is refused exactly when the symbol is frozen in what this guard knows
(the
fleet's state while connected, its last known state plus its own freezes while cut off), so no order
is ever placed on a symbol it knows is frozen; and after every reconnect the shared state equals the
model: no failure counted during the outage is lost, and nothing is applied twice.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from tcp_link import TcpLink

from broker_guard import GuardConfig, GuardedBroker, RedisStore, SymbolFrozenError
from broker_guard.testing import FakeClock, PaperBroker

TRADED = ["SOL-USD", "ETH-USD"]
DEAD = "DEAD-USD"  # delisted: every price call on it fails and counts
THRESHOLD = 3
FULL = bool(os.environ.get("BROKER_GUARD_FULL"))


def canon(symbol: str) -> str:
    return symbol.replace("-", "/")


class GuardThroughAnOutage(RuleBasedStateMachine):
    url: str = ""
    port: int = 0
    prefix: str = ""
    runs = 0

    def __init__(self) -> None:
        super().__init__()
        GuardThroughAnOutage.runs += 1
        prefix = self.prefix_used = f"{self.prefix}-{self.runs}"
        self.raw = redis.Redis.from_url(self.url)
        self.link = TcpLink(self.port)
        self.store = RedisStore(self.link.url(), prefix=prefix, max_retry_delay=0.05)
        self.other = RedisStore(self.url, prefix=prefix)
        self.paper = PaperBroker(
            prices={"SOL-USD": 100.0, "ETH-USD": 2_500.0}, cash=10**9, failure_rate=0.0
        )
        self.paper.delist(DEAD)
        config = GuardConfig.load(
            env={},
            symbol_freeze={"failure_threshold": THRESHOLD},
            guard={"refresh_interval_seconds": 0.0},
        )
        clock = FakeClock()
        self.guard: Any = GuardedBroker(
            self.paper, config, store=self.store, clock=clock, sleep=clock.sleep
        )
        self.operator = GuardedBroker(
            PaperBroker(), config, store=self.other, clock=clock, sleep=clock.sleep
        ).freeze_manager
        assert self.store.wait_until(lambda s: s.version("symbol_freeze")[0] >= 1)
        self.down = False
        self.server_frozen: set[str] = set()
        self.server_dead_count = 0
        self.known_frozen: set[str] = set()  # what the guard knows
        self.known_dead_count = 0
        self.queued_dead = 0

    def teardown(self) -> None:
        self.store.close()
        self.other.close()
        self.link.close()
        self.raw.close()

    # -- the other worker and the operator, always connected ------------------------------------

    def _seen_by_guard(self) -> None:
        """While connected, wait for the notice of the other worker's change to reach the guard's
        store."""
        revision = self.other.version("symbol_freeze")[1]
        if not self.down:
            assert self.store.wait_until(
                lambda s: s.version("symbol_freeze")[1] >= revision, timeout=10
            )
            self.known_frozen = set(self.server_frozen)
            self.known_dead_count = self.server_dead_count

    @rule(symbol=st.sampled_from([*TRADED, DEAD]))
    def operator_freezes(self, symbol: str) -> None:
        self.operator.freeze(symbol, "operator")
        self.server_frozen.add(canon(symbol))
        self._seen_by_guard()

    @rule(symbol=st.sampled_from([*TRADED, DEAD]))
    def operator_unfreezes(self, symbol: str) -> None:
        self.operator.unfreeze_symbol(symbol, "operator")
        self.server_frozen.discard(canon(symbol))
        if symbol == DEAD:
            self.server_dead_count = 0
        self._seen_by_guard()

    # -- the guard -----------------------------------------------------------------------------

    @rule()
    def guard_price_fails(self) -> None:
        if canon(DEAD) in self.known_frozen:
            with pytest.raises(SymbolFrozenError):
                self.guard.get_current_price(DEAD)  # refused: no call, no count
            return
        with pytest.raises(Exception, match="Price not available"):
            self.guard.get_current_price(DEAD)
        self.known_dead_count += 1
        if self.known_dead_count >= THRESHOLD:
            self.known_frozen.add(canon(DEAD))
        if self.down:
            self.queued_dead += 1
        else:
            self.server_dead_count = self.known_dead_count
            self.server_frozen = set(self.known_frozen)

    @rule(symbol=st.sampled_from(TRADED))
    def guard_buys(self, symbol: str) -> None:
        placed = len(self.paper.orders)
        if canon(symbol) in self.known_frozen:
            with pytest.raises(SymbolFrozenError):
                self.guard.place_market_order(symbol, "buy", 0.01)
            assert len(self.paper.orders) == placed  # never an order on a symbol it knows is frozen
        else:
            self.guard.place_market_order(symbol, "buy", 0.01)
            assert len(self.paper.orders) == placed + 1

    # -- the link ------------------------------------------------------------------------------

    @precondition(lambda self: not self.down)
    @rule()
    def cut(self) -> None:
        self.link.cut()
        # the listener noticed
        assert self.store.wait_until(lambda s: not s.health().ok, timeout=10)
        self.down = True

    @precondition(lambda self: self.down)
    @rule()
    def heal(self) -> None:
        self.link.heal()
        # reconnected and replayed
        assert self.store.wait_until(lambda s: s.health().ok, timeout=10)
        self.down = False
        self.server_dead_count += self.queued_dead
        if self.queued_dead and self.server_dead_count >= THRESHOLD:
            self.server_frozen.add(canon(DEAD))
        self.queued_dead = 0
        self.known_frozen = set(self.server_frozen)  # every guard re-reads after a reconnect
        self.known_dead_count = self.server_dead_count

    @invariant()
    def shared_state_matches_the_model(self) -> None:
        if self.down:
            return
        # the server's own copy, not a cache
        fields = self.raw.hgetall(f"{self.prefix_used}:rec:symbol_freeze")
        state = {tuple(json.loads(k)): json.loads(v) for k, v in fields.items()}
        assert {key[1] for key in state if key[0] == "frozen"} == self.server_frozen
        count = state.get(("failures", canon(DEAD)), {}).get("count", 0)
        assert count == self.server_dead_count


def test_a_guard_through_random_outages(redis_server: Any, redis_prefix: str) -> None:
    GuardThroughAnOutage.url, GuardThroughAnOutage.port, GuardThroughAnOutage.prefix = (
        redis_server.url,
        redis_server.port,
        redis_prefix,
    )
    run_state_machine_as_test(
        GuardThroughAnOutage,
        settings=settings(max_examples=200 if FULL else 12, stateful_step_count=20, deadline=None),
    )
