from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from broker_guard import GuardConfig, GuardedBroker, MemoryStore
from broker_guard.broker_dust_cleanup import reset_broker_dust_cleanup
from broker_guard.config import CONFIG_PATH_ENV, ENV_VARS
from broker_guard.enhanced_balance_fetcher import reset_enhanced_balance_fetcher
from broker_guard.symbol_freeze_manager import reset_symbol_freeze_manager
from broker_guard.testing import FakeClock, PaperBroker

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "full",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("full" if os.environ.get("BROKER_GUARD_FULL") else "ci")

SEED_PRICES = {
    "ETH-USD": 2500.0,
    "DOGE-USD": 0.15,
    "BTC-USD": 50_000.0,
    "SOL-USD": 100.0,
    "ADA-USD": 0.5,
}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs in its own directory with none of the user's config variables."""
    for var in (*ENV_VARS, CONFIG_PATH_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    reset_enhanced_balance_fetcher()
    reset_symbol_freeze_manager()
    reset_broker_dust_cleanup()
    yield
    reset_enhanced_balance_fetcher()
    reset_symbol_freeze_manager()
    reset_broker_dust_cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_guard(clock: FakeClock) -> Callable[..., Any]:
    def make(broker: object, store: Any = None, **sections: Any) -> Any:
        config = GuardConfig.load(env={}, **sections)
        return GuardedBroker(
            broker,
            config,
            store=store if store is not None else MemoryStore(),
            clock=clock,
            sleep=clock.sleep,
            async_sleep=clock.async_sleep,
        )

    return make


@pytest.fixture
def paper() -> PaperBroker:
    return PaperBroker(prices=SEED_PRICES, positions={"BTC-USD": 0.01})


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real redis-server for the session; tests keep apart by key prefix."""
    from redis_server import RedisServer, redis_required, redis_server_binary

    if redis_server_binary() is None:
        if redis_required():
            pytest.fail(
                "redis-server is required (BROKER_GUARD_REQUIRE_REDIS is set) but not installed"
            )
        pytest.skip("redis-server is not installed: apt-get install redis-server (CI installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own, so tests sharing the session's server never see each
    other."""
    import uuid

    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_redis_store(redis_server: Any, redis_prefix: str) -> Iterator[Callable[..., Any]]:
    """Build RedisStores on the session server (same prefix unless told); each is closed after the
    test."""
    from broker_guard import RedisStore

    made: list[RedisStore] = []

    def make(**kwargs: Any) -> RedisStore:
        kwargs.setdefault("prefix", redis_prefix)
        store = RedisStore(kwargs.pop("url", redis_server.url), **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
