"""BrokerProxy: the ``wrapt.ObjectProxy`` under ``GuardedBroker`` that guards a broker's role
methods.

Every attribute of the broker still works and ``isinstance(guarded,
type(broker))`` holds. The methods a profile names are intercepted by
defining them on a subclass made for each guard (no
``__getattr__`` tricks; wrapt's ``AutoObjectProxy`` does the same), built by
``guard.calls`` as closures over the guard's parts, so the success path reads
no attribute through the proxy. Replacing ``__wrapped__`` afterwards is not supported:
guard the new broker with a new ``GuardedBroker``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import wrapt

from broker_guard.clock import Clock, Sleep, asyncio_sleep, system_clock, system_sleep
from broker_guard.config import GuardConfig
from broker_guard.errors import ConfigError, NothingToGuardError
from broker_guard.events import EventHook, chained
from broker_guard.guard.balance_fetcher import EnhancedBalanceFetcher
from broker_guard.guard.calls import make_method
from broker_guard.guard.context import GuardContext
from broker_guard.guard.counters import GuardCounters
from broker_guard.guard.freeze_manager import SymbolFreezeManager
from broker_guard.guard.heartbeat import Heartbeat
from broker_guard.guard.markets import MarketNames
from broker_guard.guard.profiles import (
    MethodSpec,
    Profile,
    account_key,
    fitted,
    param_index,
    resolve_profile,
)
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, secrets_of
from broker_guard.state.base import Store
from broker_guard.state.select import store_from_config

log = redact_logger("broker_guard.proxy")


class BrokerProxy(wrapt.ObjectProxy):  # type: ignore[misc,type-arg]
    """The proxy under ``GuardedBroker`` (which documents the arguments): builds the guard's
    context and installs the guarded role methods on a subclass made for this guard."""

    _guard_own_api: tuple[str, ...] = ()  # the subclass's own methods, which shadow the broker's
    _guard_layout: _Layout = ()  # set on the per-guard subclass

    def __new__(
        cls,
        broker: object,
        *args: Any,
        profile: Any = "auto",
        strict: bool = True,
        **kwargs: Any,
    ) -> BrokerProxy:
        if isinstance(broker, BrokerProxy):
            raise TypeError("this broker is already guarded; wrap the raw broker once")
        chosen = resolve_profile(broker, profile)
        layout = _layout(broker, chosen)
        if not any(spec.role in GUARDED_ROLES for _, spec, _, _ in layout):
            _nothing_guarded(broker, chosen, strict)
        instance: BrokerProxy = super().__new__(_guarded_class(cls, broker, layout))
        return instance

    def __init__(
        self,
        broker: object,
        config: GuardConfig | None = None,
        *,
        store: Store | None = None,
        profile: str | Profile | Mapping[str, Any] = "auto",
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        async_sleep: Callable[[float], Any] | None = None,
        on_event: EventHook | None = None,
        transient_exceptions: tuple[type[BaseException], ...] = (),
        secrets: Iterable[str] = (),
        strict: bool = True,
    ) -> None:
        super().__init__(broker)
        config = _checked(config)
        clock = clock or system_clock
        secrets = secrets_of(broker, _checked_secrets(secrets))
        if store is None:
            store = store_from_config(config, clock=clock)
        store.add_secrets(secrets)
        account = account_key(broker, config.guard.account)
        counters = GuardCounters()
        on_event = chained(counters.observe, on_event)
        freeze = SymbolFreezeManager(
            config.freeze,
            store=store,
            clock=clock,
            refresh_interval=config.guard.refresh_interval_seconds,
            on_event=on_event,
            secrets=secrets,
            halt_policy=config.halt,
        )
        balance = EnhancedBalanceFetcher(
            config.balance,
            store=store,
            clock=clock,
            sleep=sleep or system_sleep,
            async_sleep=async_sleep or asyncio_sleep,
            on_event=on_event,
            secrets=secrets,
            transient_exceptions=transient_exceptions,
            account=account,
        )
        heartbeat = Heartbeat(
            store=store,
            name=config.guard.name or account,
            account=account,
            interval=config.guard.heartbeat_seconds,
            clock=clock,
            freeze=freeze,
            balance=balance,
            counters=counters,
        )
        balance.on_error_streak = _both(freeze.balance_failed, heartbeat.streak)
        freeze.on_refresh = heartbeat.tick
        layout: _Layout = self._guard_layout
        chosen = resolve_profile(broker, profile)
        lookup = chosen.market_symbol
        self._self_ctx = GuardContext(
            broker=broker,
            guarded=self,
            config=config,
            profile=chosen,
            account=account,
            store=store,
            freeze=freeze,
            balance=balance,
            clock=clock,
            secrets=secrets,
            on_event=on_event,
            counters=counters,
            heartbeat=heartbeat,
            is_async=any(is_async for _, _, is_async, _ in layout),
            markets=MarketNames(broker, lookup, chosen.load_markets) if lookup else None,
        )
        _install_methods(self._self_ctx, type(self), layout)
        self._self_warn_shadowed(broker)
        heartbeat.tick()  # a guard that starts is seen at once

    def _self_warn_shadowed(self, broker: object) -> None:
        shadowed = [n for n in self._guard_own_api if hasattr(type(broker), n)]
        if shadowed:
            log.warning(
                "broker attributes %s are shadowed by %s's own; reach them via .__wrapped__",
                shadowed,
                type(self).__mro__[1].__name__,
            )

    # -- the guard's parts -----------------------------------------------------------------

    @property
    def guard_context(self) -> GuardContext:
        """The guard's parts as one typed object (what liquidation, health and maintenance work
        on)."""
        return self._self_ctx  # type: ignore[no-any-return]

    @property
    def guard_config(self) -> GuardConfig:
        return self._self_ctx.config  # type: ignore[no-any-return]

    @property
    def freeze_manager(self) -> SymbolFreezeManager:
        return self._self_ctx.freeze  # type: ignore[no-any-return]

    @property
    def balance_fetcher(self) -> EnhancedBalanceFetcher:
        return self._self_ctx.balance  # type: ignore[no-any-return]

    @property
    def account(self) -> str:
        return self._self_ctx.account  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        ctx = self._self_ctx
        return redact(
            f"<{type(self).__mro__[1].__name__} account={ctx.account!r} of {ctx.broker!r}>",
            ctx.secrets,
        )


def _both(
    first: Callable[[str, int, str], None], then: Callable[[str, int, str], None]
) -> Callable[[str, int, str], None]:
    """The balance error-streak hook: the automatic halt's, then the heartbeat's."""

    def both(account: str, count: int, error: str) -> None:
        first(account, count, error)
        then(account, count, error)

    return both


def _checked_secrets(secrets: Iterable[str]) -> list[str]:
    """``secrets=[...]``: credential values to mask wherever text enters logs, state or output."""
    if isinstance(secrets, str):
        raise TypeError("secrets must be a list of strings, not one string")
    values = list(secrets)
    wrong = [type(v).__name__ for v in values if not isinstance(v, str)]
    if wrong:
        raise TypeError(f"secrets must be strings; got {', '.join(wrong)}")
    return values


def _checked(config: object) -> GuardConfig:
    if config is None:
        return GuardConfig.load()
    if not isinstance(config, GuardConfig):
        raise ConfigError(
            "config", type(config).__name__, "a GuardConfig (build one with GuardConfig.load(...))"
        )
    return config


_Layout = tuple[tuple[str, MethodSpec, bool, tuple[int, ...]], ...]


def _layout(broker: object, profile: Profile) -> _Layout:
    """One entry per role method ``broker`` has: name, spec, async or not, and where symbol and side
    are."""
    layout = []
    for name, spec in profile.present(broker).items():
        method = getattr(broker, name)
        spec = fitted(spec, method)
        layout.append((name, spec, inspect.iscoroutinefunction(method), _indexes(method, spec)))
    return tuple(layout)


GUARDED_ROLES = ("balance", "price", "order")
_warned_unguarded: set[type] = set()


def _nothing_guarded(broker: object, profile: Profile, strict: bool) -> None:
    """A guard over a broker whose methods the profile does not know would guard nothing: say
    which methods were looked for and how to name the broker's own (raise, or warn once)."""
    looked = "; ".join(
        f"{role}: {', '.join(n for n, s in profile.methods.items() if s.role == role)}"
        for role in GUARDED_ROLES
    )
    own = [n for n in dir(broker) if not n.startswith("_") and callable(getattr(broker, n, None))]
    message = (
        f"{type(broker).__name__} has none of the methods the {profile.name!r} profile guards "
        f"({looked}): nothing would be guarded. Name yours, for example "
        "GuardedBroker(broker, profile={'balance': 'balance', 'price': 'price', "
        "'place': 'order'}) or a Profile.custom(...) with MethodSpec for other parameter names. "
        f"Its public methods: {', '.join(own[:20]) or 'none'}."
    )
    if strict:
        raise NothingToGuardError(message)
    if type(broker) not in _warned_unguarded:
        _warned_unguarded.add(type(broker))
        warnings.warn(message, stacklevel=4)
        log.warning("%s", message)


def _guarded_class(cls: type, broker: object, layout: _Layout) -> type:
    """A fresh subclass of ``cls`` for one guard; ``__init__`` installs its methods as closures.

    Until then every role method refuses, so a guard whose ``__init__`` never
    ran can never pass an order through unguarded.
    """
    methods: dict[str, Any] = {
        name: _not_initialised(f"{cls.__name__}.{name}", cls.__name__) for name, *_ in layout
    }
    methods["__module__"] = cls.__module__
    methods["_guard_layout"] = layout
    return type(f"{cls.__name__}[{type(broker).__name__}]", (cls,), methods)


def _install_methods(ctx: GuardContext, sub: type, layout: _Layout) -> None:
    for name, spec, is_async, indexes in layout:
        setattr(sub, name, make_method(ctx, name, spec, is_async, indexes))


def _not_initialised(method: str, owner: str) -> Callable[..., Any]:
    def refuse(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{method}: the guard was not initialised ({owner}.__init__ did not run)"
        )

    return refuse


def _indexes(method: Callable[..., Any], spec: MethodSpec) -> tuple[int, ...]:
    """Where the symbol, side, params, batch and amount arguments sit in a call (-1: keyword
    only)."""
    names = (spec.symbol, spec.side, spec.params, spec.batch, spec.amount)
    return tuple(param_index(method, name) if name else -1 for name in names)


__all__ = ["BrokerProxy"]
