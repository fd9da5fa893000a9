"""BrokerProxy: the ``wrapt.ObjectProxy`` under ``GuardedBroker`` that guards a broker's role methods.

Every attribute of the broker still works and ``isinstance(guarded,
type(broker))`` holds. The methods a profile names are intercepted by
defining them on a subclass made for each guard (no
``__getattr__`` tricks; wrapt's ``AutoObjectProxy`` does the same). They are
closures over the guard's parts, so the success path reads no attribute
through the proxy. Replacing ``__wrapped__`` afterwards is not supported:
guard the new broker with a new ``GuardedBroker``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import wrapt

from broker_guard.classify import FailureKind
from broker_guard.clock import Clock, Sleep, asyncio_sleep, system_clock, system_sleep
from broker_guard.config import GuardConfig
from broker_guard.errors import ConfigError, GuardRefusedError, InvalidResponseError
from broker_guard.events import EventHook
from broker_guard.guard.balance_fetcher import EnhancedBalanceFetcher
from broker_guard.guard.context import GuardContext
from broker_guard.guard.freeze_manager import ALLOW, PROBE, SymbolFreezeManager
from broker_guard.guard.profiles import EXIT_SIDES, MethodSpec, Profile, account_key, param_index, resolve_profile
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, secrets_of
from broker_guard.state.base import Store
from broker_guard.state.select import store_from_config
from broker_guard.symbols import _cache as symbols_cache
from broker_guard.symbols import canonical_symbol

log = redact_logger("broker_guard.proxy")


class BrokerProxy(wrapt.ObjectProxy):  # type: ignore[misc,type-arg]
    """Wrap ``broker``; strategy code keeps calling the same methods (``GuardedBroker`` is the public face).

    ``config``: a ``GuardConfig`` (default: ``GuardConfig.load()``, file and
    environment). ``store``: where shared state lives (default: what
    ``config.guard.store_url`` names, JSON files in ``config.guard.data_dir``
    unless it is a Redis URL). ``profile``: ``"auto"``, ``"generic"``,
    ``"ccxt"``, a ``Profile`` or a ``{method: role}`` mapping. ``clock``,
    ``sleep`` and ``async_sleep`` are injectable for tests; ``on_event``
    receives ``GuardEvent``s.
    """

    _guard_own_api: tuple[str, ...] = ()  # the subclass's own methods, which shadow the broker's

    def __new__(cls, broker: object, *args: Any, profile: Any = "auto", **kwargs: Any) -> BrokerProxy:
        if isinstance(broker, BrokerProxy):
            raise TypeError("this broker is already guarded; wrap the raw broker once")
        layout = _layout(broker, resolve_profile(broker, profile))
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
    ) -> None:
        super().__init__(broker)
        if config is None:
            config = GuardConfig.load()
        elif not isinstance(config, GuardConfig):
            raise ConfigError("config", type(config).__name__, "a GuardConfig (build one with GuardConfig.load(...))")
        clock = clock or system_clock
        secrets = secrets_of(broker)
        if store is None:
            store = store_from_config(config, clock=clock)
        store.add_secrets(secrets)
        account = account_key(broker, config.guard.account)
        freeze = SymbolFreezeManager(
            config.freeze,
            store=store,
            clock=clock,
            refresh_interval=config.guard.refresh_interval_seconds,
            on_event=on_event,
            secrets=secrets,
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
        layout: _Layout = type(self)._guard_layout  # type: ignore[attr-defined]
        self._self_ctx = GuardContext(
            broker=broker,
            guarded=self,
            config=config,
            profile=resolve_profile(broker, profile),
            account=account,
            store=store,
            freeze=freeze,
            balance=balance,
            clock=clock,
            secrets=secrets,
            on_event=on_event,
            is_async=any(is_async for _, _, is_async, _ in layout),
        )
        _install_methods(self._self_ctx, type(self), layout)
        shadowed = [n for n in type(self)._guard_own_api if hasattr(type(broker), n)]
        if shadowed:
            log.warning(
                "broker attributes %s are shadowed by %s's own; reach them via .__wrapped__",
                shadowed,
                type(self).__mro__[1].__name__,
            )

    # -- the guard's parts -----------------------------------------------------------------

    @property
    def guard_context(self) -> GuardContext:
        """The guard's parts as one typed object (what liquidation, health and maintenance work on)."""
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
        return redact(f"<{type(self).__mro__[1].__name__} account={ctx.account!r} of {ctx.broker!r}>", ctx.secrets)


class _Parts:
    """What the generated methods of one guard close over: read as closure cells, not proxy attributes.

    Every attribute read on a ``wrapt`` proxy goes through its C ``getattro``
    (~100 ns each); the success path of a price call reads none.
    """

    __slots__ = ("account", "balance", "broker", "config", "freeze", "secrets")

    def __init__(self, ctx: GuardContext) -> None:
        self.broker: Any = ctx.broker
        self.freeze: SymbolFreezeManager = ctx.freeze
        self.balance: EnhancedBalanceFetcher = ctx.balance
        self.config: GuardConfig = ctx.config
        self.secrets: tuple[str, ...] = ctx.secrets
        self.account: str = ctx.account

    def admit(self, symbol: str, canon: str) -> int | None:
        """The freeze manager's verdict; None when a refused call should answer None (``frozen_returns_none``)."""
        try:
            return self.freeze.admit(canon)
        except GuardRefusedError:
            if self.config.freeze.frozen_returns_none:
                return None
            raise

    def price_failed(self, symbol: str, canon: str, exc: BaseException, mode: int, kind: FailureKind | None = None) -> None:
        kind = kind or self.balance.kind_of(exc)
        if mode == PROBE and (kind.retryable or kind is FailureKind.AUTH):
            self.freeze.end_probe(canon)  # no verdict on the symbol from an outage
            return
        self.freeze.record_price_fetch_failure(symbol, exc, kind=kind)

    def invalid_price(self, symbol: str, canon: str, value: Any, mode: int) -> InvalidResponseError:
        error = InvalidResponseError(f"invalid price for {symbol}: {redact(repr(value), self.secrets)[:80]}")
        self.price_failed(symbol, canon, error, mode, FailureKind.INVALID_RESPONSE)
        return error

    def succeeded(self, canon: str, mode: int) -> None:
        if mode or canon in self.freeze._counts:
            self.freeze.record_success(canon, probe=mode == PROBE)


_Layout = tuple[tuple[str, MethodSpec, bool, tuple[int, int]], ...]


def _layout(broker: object, profile: Profile) -> _Layout:
    """One entry per role method ``broker`` has: name, spec, async or not, and where symbol and side are."""
    present = profile.present(broker)
    return tuple(
        (name, spec, inspect.iscoroutinefunction(getattr(broker, name)), _indexes(getattr(broker, name), spec))
        for name, spec in present.items()
    )


def _guarded_class(cls: type, broker: object, layout: _Layout) -> type:
    """A fresh subclass of ``cls`` for one guard; ``__init__`` installs its methods as closures.

    Until then every role method refuses, so a guard whose ``__init__`` never
    ran can never pass an order through unguarded.
    """
    methods: dict[str, Any] = {name: _not_initialised(name) for name, *_ in layout}
    methods["__module__"] = cls.__module__
    methods["_guard_layout"] = layout
    return type(f"{cls.__name__}[{type(broker).__name__}]", (cls,), methods)


def _install_methods(ctx: GuardContext, sub: type, layout: _Layout) -> None:
    parts = _Parts(ctx)
    for name, spec, is_async, indexes in layout:
        setattr(sub, name, _make_method(parts, name, spec, is_async, indexes))


def _not_initialised(name: str) -> Callable[..., Any]:
    def refuse(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name}: the guard was not initialised (GuardedBroker.__init__ did not run)")

    return refuse


def _indexes(method: Callable[..., Any], spec: MethodSpec) -> tuple[int, int]:
    return param_index(method, spec.symbol), param_index(method, spec.side)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str | None) -> Any:
    if 0 <= index < len(args):
        return args[index]
    return kwargs.get(name) if name else None


def _is_exit(spec: MethodSpec, side: Any, kwargs: dict[str, Any]) -> bool:
    if spec.exit or kwargs.get("reduce_only") or kwargs.get("reduceOnly"):
        return True
    return isinstance(side, str) and side.lower() in EXIT_SIDES


def _make_method(parts: _Parts, name: str, spec: MethodSpec, is_async: bool, indexes: tuple[int, int]) -> Callable[..., Any]:
    if spec.role == "balance":
        return _balance_method(parts, name, is_async)
    if spec.role == "price":
        return (_many_prices_method if spec.many else _price_method)(parts, name, spec, is_async, indexes[0])
    if spec.role == "order":
        return _order_method(parts, name, spec, is_async, indexes)
    return _passthrough_method(parts, name, is_async)


def _signature(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if not args and not kwargs:
        return name
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
    return f"{name}({', '.join(parts)})"


def _balance_method(parts: _Parts, name: str, is_async: bool) -> Callable[..., Any]:
    broker, fetcher, account = parts.broker, parts.balance, parts.account
    plain_key = (account, name)
    if is_async:

        async def balance_async(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
            key = (account, _signature(name, args, kwargs)) if args or kwargs else plain_key
            return await fetcher.call_async(getattr(broker, name), args, kwargs, key)

        return balance_async

    def balance(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
        key = (account, _signature(name, args, kwargs)) if args or kwargs else plain_key
        return fetcher.call(getattr(broker, name), args, kwargs, key)

    return balance


def _price_method(parts: _Parts, name: str, spec: MethodSpec, is_async: bool, index: int) -> Callable[..., Any]:
    """The hot path: a cached canonical form, one set lookup and one clock read before the broker call."""
    broker, freeze, pname, extract = parts.broker, parts.freeze, spec.symbol, spec.price
    clock, canonical, known = freeze._clock, canonical_symbol, symbols_cache

    if is_async:

        async def price_async(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
            symbol = args[index] if 0 <= index < len(args) else kwargs.get(pname)  # type: ignore[arg-type]
            if not isinstance(symbol, str):
                return await getattr(broker, name)(*args, **kwargs)
            canon = known.get(symbol) or canonical(symbol)
            mode = ALLOW
            if canon in freeze._blocked or clock() >= freeze._next_refresh:
                admitted = parts.admit(symbol, canon)
                if admitted is None:
                    return None
                mode = admitted
            try:
                value = await getattr(broker, name)(*args, **kwargs)
            except Exception as exc:
                parts.price_failed(symbol, canon, exc, mode)
                raise
            except BaseException:  # cancelled: no verdict
                if mode == PROBE:
                    freeze.end_probe(canon)
                raise
            if extract(value) is None:
                raise parts.invalid_price(symbol, canon, value, mode)
            if mode or canon in freeze._counts:
                parts.succeeded(canon, mode)
            return value

        return price_async

    def price(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
        symbol = args[index] if 0 <= index < len(args) else kwargs.get(pname)  # type: ignore[arg-type]
        if not isinstance(symbol, str):
            return getattr(broker, name)(*args, **kwargs)
        canon = known.get(symbol) or canonical(symbol)
        mode = ALLOW
        if canon in freeze._blocked or clock() >= freeze._next_refresh:
            admitted = parts.admit(symbol, canon)
            if admitted is None:
                return None
            mode = admitted
        try:
            value = getattr(broker, name)(*args, **kwargs)
        except Exception as exc:
            parts.price_failed(symbol, canon, exc, mode)
            raise
        if extract(value) is None:
            raise parts.invalid_price(symbol, canon, value, mode)
        if mode or canon in freeze._counts:
            parts.succeeded(canon, mode)
        return value

    return price


def _many_prices_method(parts: _Parts, name: str, spec: MethodSpec, is_async: bool, index: int) -> Callable[..., Any]:
    """ccxt ``fetch_tickers``: frozen symbols are left out of the call and the answer, not the whole call failed."""
    broker, freeze, extract = parts.broker, parts.freeze, spec.price
    pname = spec.symbol or "symbols"

    def before(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, int]]:
        symbols = _arg(args, kwargs, index, pname)
        modes: dict[str, int] = {}
        if symbols is None:
            return args, kwargs, modes
        kept = []
        for symbol in symbols:
            try:
                modes[symbol] = freeze.admit(canonical_symbol(symbol))
                kept.append(symbol)
            except GuardRefusedError:
                log.debug("left %s out of %s: frozen or restricted", symbol, name)
        if 0 <= index < len(args):
            args = (*args[:index], kept, *args[index + 1 :])
        else:
            kwargs = {**kwargs, pname: kept}
        return args, kwargs, modes

    def after(value: Any, modes: dict[str, int]) -> Any:
        if not isinstance(value, Mapping):
            return value
        out = {}
        for symbol, ticker in value.items():
            canon = canonical_symbol(symbol)
            mode = modes.get(symbol, 0)
            if not modes and canon in freeze._blocked:
                continue
            if extract(ticker) is None:
                parts.invalid_price(symbol, canon, ticker, mode)
                continue
            parts.succeeded(canon, mode)
            out[symbol] = ticker
        return out

    if is_async:

        async def tickers_async(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
            args, kwargs, modes = before(args, kwargs)
            if modes == {} and _arg(args, kwargs, index, pname) == []:
                return {}
            return after(await getattr(broker, name)(*args, **kwargs), modes)

        return tickers_async

    def tickers(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
        args, kwargs, modes = before(args, kwargs)
        if modes == {} and _arg(args, kwargs, index, pname) == []:
            return {}
        return after(getattr(broker, name)(*args, **kwargs), modes)

    return tickers


def _order_method(parts: _Parts, name: str, spec: MethodSpec, is_async: bool, indexes: tuple[int, int]) -> Callable[..., Any]:
    """Entries on frozen or restricted symbols are refused before the broker sees them; exits pass.

    Orders are never retried: a retried order can fill twice.
    """
    broker, freeze = parts.broker, parts.freeze
    symbol_index, side_index = indexes
    pname, sname = spec.symbol, spec.side

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        symbol = _arg(args, kwargs, symbol_index, pname)
        if isinstance(symbol, str) and not _is_exit(spec, _arg(args, kwargs, side_index, sname), kwargs):
            freeze.check_entry(canonical_symbol(symbol))

    if is_async:

        async def order_async(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            return await getattr(broker, name)(*args, **kwargs)

        return order_async

    def order(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        return getattr(broker, name)(*args, **kwargs)

    return order


def _passthrough_method(parts: _Parts, name: str, is_async: bool) -> Callable[..., Any]:
    broker = parts.broker

    def passthrough(self: BrokerProxy, *args: Any, **kwargs: Any) -> Any:
        return getattr(broker, name)(*args, **kwargs)

    return passthrough


__all__ = ["BrokerProxy"]
