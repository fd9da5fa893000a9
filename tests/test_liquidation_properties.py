"""Liquidation safety: the properties that, broken, lose a user money."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from broker_guard import GuardConfig, GuardedBroker, MemoryStore, StoreError
from broker_guard.testing import FakeClock, PaperBroker
from broker_guard.user_account_normalization import run_normalization_pass

ASSETS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]


class RecordingBroker(PaperBroker):
    """A paper broker that records the value of every order at the moment it is placed and may fail
    orders."""

    def __init__(self, failing: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failing = failing
        self.placed: list[tuple[str, float]] = []

    def place_market_order(
        self,
        symbol: str,
        side: str,
        quantity: float,
        force_liquidate: bool = False,
        ignore_min_trade: bool = False,
    ) -> Any:
        price = self.prices.get(symbol.replace("-", "/"))
        self.placed.append((symbol, quantity * price if price else float("nan")))
        if symbol in self.failing:
            raise ConnectionError("order endpoint down")
        return super().place_market_order(symbol, side, quantity, force_liquidate=True)


portfolios = st.dictionaries(
    st.sampled_from(ASSETS),
    st.tuples(
        st.floats(min_value=-5, max_value=50, allow_nan=False),  # quantity (negative: a short)
        st.one_of(
            st.none(), st.floats(min_value=0.001, max_value=20, allow_nan=False)
        ),  # price, None: no price
    ),
    max_size=6,
)


def _setup(
    portfolio: dict[str, tuple[float, float | None]],
    frozen: list[str],
    restricted: list[str],
    failing: list[str],
    **sections: Any,
) -> Any:
    prices = {f"{a}-USD": p for a, (_q, p) in portfolio.items() if p is not None}
    broker = RecordingBroker(
        {f"{a}-USD" for a in failing},
        prices=prices,
        positions={f"{a}-USD": q for a, (q, _p) in portfolio.items()},
    )
    clock = FakeClock()
    guard = GuardedBroker(
        broker,
        GuardConfig.load(env={}, **sections),
        store=MemoryStore(),
        clock=clock,
        sleep=clock.sleep,
    )
    for a in frozen:
        guard.freeze_manager.freeze(f"{a}-USD")
    for a in restricted:
        guard.freeze_manager.restrict(f"{a}-USD")
    return broker, guard


def _safe_value(portfolio: dict[str, tuple[float, float | None]], symbol: str) -> float | None:
    quantity, price = portfolio[symbol.split("-")[0]]
    return quantity * price if price is not None and quantity > 0 else None


def _assert_no_unsafe_order(
    broker: RecordingBroker,
    portfolio: dict[str, tuple[float, float | None]],
    dry_run: bool,
    limit: float,
    blocked: list[str],
) -> None:
    if dry_run:
        assert broker.placed == []  # never in dry-run
    for symbol, value in broker.placed:
        assert value < limit  # never at or above the threshold
        # never on an unknown value (frozen, restricted)
        assert symbol not in {f"{a}-USD" for a in blocked}
        # never without a price or a long quantity
        assert _safe_value(portfolio, symbol) is not None


settings_args = dict(
    portfolio=portfolios,
    threshold=st.floats(min_value=0.01, max_value=20),
    dry_run=st.booleans(),
    frozen=st.lists(st.sampled_from(ASSETS), max_size=2),
    restricted=st.lists(st.sampled_from(ASSETS), max_size=2),
    failing=st.lists(st.sampled_from(ASSETS), max_size=2),
)


@given(**settings_args)
def test_dust_never_closes_what_it_must_not(
    portfolio: dict[str, tuple[float, float | None]],
    threshold: float,
    dry_run: bool,
    frozen: list[str],
    restricted: list[str],
    failing: list[str],
) -> None:
    broker, guard = _setup(portfolio, frozen, restricted, failing)
    result = guard.dust(dry_run=dry_run, threshold_usd=threshold)
    _assert_no_unsafe_order(broker, portfolio, dry_run, threshold, frozen + restricted)
    held = [f"{a}-USD" for a, (q, _p) in portfolio.items() if q != 0]
    reported = [p["symbol"] for p in result["positions"]]
    assert sorted(reported) == sorted(held)  # every position exactly once
    again = guard.dust(dry_run=dry_run, threshold_usd=threshold)
    if not failing and not dry_run:
        assert again["closed"] == 0  # a second run right after a successful one closes nothing


@given(**settings_args, candidates=st.booleans())
def test_normalize_never_closes_what_it_must_not(
    portfolio: dict[str, tuple[float, float | None]],
    threshold: float,
    dry_run: bool,
    frozen: list[str],
    restricted: list[str],
    failing: list[str],
    candidates: bool,
) -> None:
    broker, guard = _setup(portfolio, frozen, restricted, failing)
    limit = threshold * 1.5 if candidates else threshold
    result = run_normalization_pass(
        guard,
        threshold,
        dry_run,
        consolidation_threshold_usd=threshold * 1.5,
        close_consolidation_candidates=candidates,
        config=guard.guard_config,
    )
    _assert_no_unsafe_order(broker, portfolio, dry_run, limit, frozen + restricted)
    assert all(value < threshold * 1.5 for _s, value in broker.placed)
    held = sorted(f"{a}-USD" for a, (q, _p) in portfolio.items() if q != 0)
    assert sorted(a["symbol"] for a in result["actions"]) == held


bad_thresholds = st.one_of(
    st.just(float("inf")),
    st.just(float("nan")),
    st.floats(max_value=-1e-9, allow_nan=False),
)


@given(
    portfolio=portfolios,
    threshold=bad_thresholds,
    which=st.sampled_from(["dust", "normalize minimum", "normalize consolidation"]),
)
def test_a_threshold_that_is_not_a_finite_non_negative_number_never_places_an_order(
    portfolio: dict[str, tuple[float, float | None]], threshold: float, which: str
) -> None:
    """An infinite threshold makes every position "small": refused before any position is read."""
    import pytest

    from broker_guard import ConfigError

    broker, guard = _setup(portfolio, [], [], [])
    with pytest.raises(ConfigError):
        if which == "dust":
            guard.dust(dry_run=False, threshold_usd=threshold)
        elif which == "normalize minimum":
            guard.normalize(dry_run=False, minimum_position_usd=threshold)
        else:
            guard.normalize(dry_run=False, consolidation_threshold_usd=threshold)
    assert broker.placed == []


class FlakyAuditStore(MemoryStore):
    """Audit lines fail to write for the symbols in ``unwritable`` (a full disk, Redis down)."""

    def __init__(self, unwritable: set[str]) -> None:
        super().__init__()
        self.unwritable = unwritable

    def append(self, name: str, record: dict[str, Any]) -> None:
        if record.get("symbol") in self.unwritable:
            raise StoreError("audit line not written: no space left on device")
        super().append(name, record)


@given(
    portfolio=portfolios,
    unwritable=st.lists(st.sampled_from(ASSETS), max_size=6),
    kind=st.sampled_from(["dust", "normalize"]),
)
def test_no_order_is_placed_without_its_pending_audit_line(
    portfolio: dict[str, tuple[float, float | None]], unwritable: list[str], kind: str
) -> None:
    prices = {f"{a}-USD": p for a, (_q, p) in portfolio.items() if p is not None}
    broker = RecordingBroker(
        set(), prices=prices, positions={f"{a}-USD": q for a, (q, _p) in portfolio.items()}
    )
    store = FlakyAuditStore({f"{a}-USD" for a in unwritable})
    clock = FakeClock()
    guard = GuardedBroker(
        broker, GuardConfig.load(env={}), store=store, clock=clock, sleep=clock.sleep
    )
    if kind == "dust":
        guard.dust(dry_run=False, threshold_usd=20.0)
    else:
        guard.normalize(dry_run=False)
    pending = {r["symbol"] for r in store.read_lines("audit") if r["outcome"] == "pending"}
    for symbol, _value in broker.placed:
        assert symbol in pending, f"an order on {symbol} went out without its pending line"


dust_portfolios = st.dictionaries(
    st.sampled_from(ASSETS),
    st.tuples(st.floats(min_value=0.01, max_value=1), st.floats(min_value=0.01, max_value=2)),
    min_size=1,
    max_size=6,
)


@given(
    portfolio=dust_portfolios,
    cap=st.floats(min_value=0.01, max_value=3),
    failing=st.lists(st.sampled_from(ASSETS), max_size=3),
)
def test_the_per_run_cap_is_never_exceeded_by_what_was_sent(
    portfolio: dict[str, tuple[float, float | None]], cap: float, failing: list[str]
) -> None:
    """Orders that raise (their outcome unknown, they may have filled) count toward the cap like
    the ones that closed: what one run sends never adds up to more than the cap."""
    broker, guard = _setup(portfolio, [], [], failing, dust={"max_usd_per_run": cap})
    guard.dust(dry_run=False, threshold_usd=20.0)
    assert sum(value for _symbol, value in broker.placed) <= cap + 1e-9
