"""The guarded methods: one body per role, driven by a sync or an async driver.

A body decides around one broker call: ``enter`` (may refuse, may take the
probe slot), then ``failed`` or ``returned`` with what the broker did. A
driver only calls: the sync driver calls the broker's method, the async one
awaits it; nothing else differs (as tenacity's ``AsyncRetrying`` only awaits
what ``BaseRetrying`` decided). Every verdict comes from the freeze manager,
which asks ``core.freeze``: the price, tickers, order and seed-API paths share
one copy of the rules. A probe slot taken in ``enter`` is settled or released
on every path out: success, symbol failure, transient failure, cancellation,
or an exception raised by the guard itself.

The success path of a price call is a cached canonical form, one set lookup,
one clock read and two small calls around the broker's own.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from broker_guard.classify import FailureKind, classify
from broker_guard.core import freeze as rules
from broker_guard.core import gate
from broker_guard.core.freeze import ALLOW, PROBE
from broker_guard.core.validate import plain_price, real_number
from broker_guard.errors import GuardRefusedError, InvalidResponseError, StateUnconfirmedError
from broker_guard.guard.balance_fetcher import RequestTimeout
from broker_guard.guard.context import GuardContext
from broker_guard.guard.exposure import QUANTITY_KEYS, SYMBOL_KEYS, HoldingRead, field
from broker_guard.guard.markets import MarketsUnknown
from broker_guard.guard.profiles import MethodSpec, is_ccxt
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact
from broker_guard.symbols import canonical_symbol, known_symbols

log = redact_logger("broker_guard.proxy")
ORDER_SIDE_KEYS = ("side", "action", "direction", "order_side")
PARAMS = ("params",)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
Ticket = Any  # what ``enter`` hands to ``failed`` / ``returned``; None: nothing to settle
_INF = math.inf


class AnswerNone(Exception):
    """Raised by ``enter`` when a refused call answers None (``freeze.frozen_returns_none``)."""


class Body(Protocol):
    def enter(self, args: Args, kwargs: Kwargs) -> Ticket: ...

    def failed(self, ticket: Ticket, exc: BaseException) -> None: ...

    def returned(self, ticket: Ticket, value: Any) -> Any: ...


def arg(args: Args, kwargs: Kwargs, index: int, name: str | None) -> Any:
    """The argument at ``index``, else the keyword ``name``."""
    if 0 <= index < len(args):
        return args[index]
    return kwargs.get(name) if name else None


# -- bodies ---------------------------------------------------------------------------------


class PriceBody:
    """One symbol's price: refused when frozen or restricted, every failure counted, every
    answer validated; after a cooldown the call is the probe that unfreezes or refreezes.

    ``enter`` and ``returned`` are closures (cells are cheaper than attributes on the hot
    path). The ticket is the symbol itself on the fast path (allowed, no failure count to
    reset, nothing to settle), a ``(symbol, canon, mode)`` tuple otherwise, None without a
    symbol.
    """

    __slots__ = ("ctx", "enter", "extract", "freeze", "market_name", "returned", "transient")

    def __init__(self, ctx: GuardContext, spec: MethodSpec, index: int) -> None:
        self.ctx = ctx
        self.freeze = freeze = ctx.freeze
        self.extract = extract = spec.price
        self.transient = ctx.balance.transient_exceptions
        self.market_name = market_name = ctx.markets.name if ctx.markets else None
        pname = spec.symbol or ""
        known, canonical = known_symbols, canonical_symbol
        admit, settle = self.admit, self.settle
        plain = extract is plain_price  # a float above zero is valid without a call

        def enter(args: Args, kwargs: Kwargs) -> Ticket:
            symbol = args[index] if 0 <= index < len(args) else kwargs.get(pname)
            if not isinstance(symbol, str):
                return None  # no symbol to judge: the broker's own answer
            if market_name is not None:
                symbol = market_name(symbol)  # a ccxt market id is the market it names
            canon = known.get(symbol) or canonical(symbol)
            # frozen, restricted or counting failures (a success resets the count), or a
            # refresh due: off the fast path, through the freeze manager's verdict
            if canon in freeze.watched or freeze.monotonic() >= freeze.next_refresh:
                return symbol, canon, admit(canon)
            return symbol

        def returned(ticket: Ticket, value: Any) -> Any:
            if ticket.__class__ is str:  # allowed, no count to reset: a valid answer is all
                if plain and value.__class__ is float and 0.0 < value < _INF:
                    return value
                if extract(value) is not None:
                    return value
            return settle(ticket, value)

        self.enter = enter
        self.returned = returned

    def admit(self, canon: str) -> int:
        try:
            return self.freeze.admit(canon)
        except GuardRefusedError:
            if self.ctx.config.freeze.frozen_returns_none:
                raise AnswerNone from None
            raise

    @staticmethod
    def unpack(ticket: Ticket) -> tuple[str, str, int]:
        if isinstance(ticket, str):
            return ticket, canonical_symbol(ticket), ALLOW
        symbol, canon, mode = ticket
        return symbol, canon, mode

    def settle(self, ticket: Ticket, value: Any) -> Any:
        """The answer off the fast path: judged, then returned or raised as invalid."""
        if ticket is None:
            return value
        error = self.judge(*self.unpack(ticket), value)
        if error is not None:
            raise error
        return value

    def judge(self, symbol: str, canon: str, mode: int, value: Any) -> InvalidResponseError | None:
        """Validate one answer and tell the freeze manager: a count reset, a probe's unfreeze, or
        an invalid answer counted. A probe slot is given back whatever happens in here."""
        try:
            if self.extract(value) is None:
                shown = redact(repr(value), self.ctx.secrets)[:80]
                error = InvalidResponseError(f"invalid price for {symbol}: {shown}")
                self.report(symbol, mode, error, FailureKind.INVALID_RESPONSE)
                return error
            if mode or canon in self.freeze.failing:
                self.freeze.record_success(canon, probe=mode == PROBE)
            return None
        finally:
            if mode == PROBE:
                self.freeze.end_probe(canon)

    def failed(self, ticket: Ticket, exc: BaseException) -> None:
        if ticket is None:
            return
        symbol, canon, mode = self.unpack(ticket)
        try:
            self.report(symbol, mode, exc, None)
        finally:
            if mode == PROBE:
                self.freeze.end_probe(canon)

    def report(self, symbol: str, mode: int, exc: BaseException, kind: FailureKind | None) -> None:
        """Count a failure; a probe that was cancelled or met an outage gets no verdict."""
        if not isinstance(exc, Exception):
            return  # cancelled or interrupted: no verdict on the symbol
        kind = kind or classify(exc, self.transient)
        if mode == PROBE and not rules.probe_settled_by(kind):
            return  # an outage says nothing about the symbol
        self.freeze.record_failure(symbol, exc, kind)


Modes = dict[str, int] | None  # each kept symbol's admission; None: the call asked for every symbol


class TickersBody:
    """Many prices in one call (ccxt ``fetch_tickers``): refused symbols are left out of the call
    and of the answer instead of failing the whole call; each answer is judged like a price."""

    __slots__ = ("index", "name", "pname", "price")

    def __init__(self, ctx: GuardContext, spec: MethodSpec, index: int, name: str) -> None:
        self.price = PriceBody(ctx, spec, index)
        self.index = index
        self.name = name
        self.pname = spec.symbol or "symbols"

    def enter(self, args: Args, kwargs: Kwargs) -> tuple[Args, Kwargs, Modes]:
        """The call's arguments with refused symbols left out, and each kept symbol's mode."""
        symbols = arg(args, kwargs, self.index, self.pname)
        if symbols is None:
            return args, kwargs, None  # every symbol: frozen ones are dropped from the answer
        modes: dict[str, int] = {}
        kept = []
        market_name = self.price.market_name
        try:
            for symbol in symbols:
                # modes are keyed by the market's symbol, which is how the answer names it
                named = market_name(symbol) if market_name and isinstance(symbol, str) else symbol
                if named not in modes:
                    try:
                        modes[named] = self.price.freeze.admit(canonical_symbol(named))
                    except GuardRefusedError:
                        log.debug("left %s out of %s: frozen or restricted", symbol, self.name)
                        continue
                kept.append(symbol)
        except BaseException:
            self.release(modes)
            raise
        if 0 <= self.index < len(args):
            args = (*args[: self.index], kept, *args[self.index + 1 :])
        else:
            kwargs = {**kwargs, self.pname: kept}
        return args, kwargs, modes

    def returned(self, modes: Modes, value: Any) -> Any:
        if not isinstance(value, Mapping):
            self.release(modes)
            return value
        out = {}
        try:
            for symbol, ticker in value.items():
                if self.judge(symbol, ticker, modes):
                    out[symbol] = ticker
        finally:
            self.release(modes)  # a probed symbol missing from the answer: no verdict
        return out

    def judge(self, symbol: str, ticker: Any, modes: Modes) -> bool:
        price = self.price
        canon = canonical_symbol(symbol)
        if modes is None and canon in price.freeze.blocked:
            return False
        mode = modes.pop(symbol, ALLOW) if modes else ALLOW
        return price.judge(symbol, canon, mode, ticker) is None

    def failed(self, modes: Modes, exc: BaseException) -> None:
        self.release(modes)  # a failed batch says nothing about any one symbol

    def release(self, modes: Modes) -> None:
        freeze = self.price.freeze
        for symbol, mode in (modes or {}).items():
            if mode == PROBE:
                freeze.end_probe(canonical_symbol(symbol))


class OrderBody:
    """Entries on a symbol the guard does not trust, or while trading is halted, are refused
    before the broker sees them; exits pass. What an order does is ``core.gate``'s rule: reduce-only
    (keywords or ccxt ``params``) and close-only methods are exits; a sell, or on derivatives a
    buy, is an exit only when it reduces what the broker reports held, which is read only when
    the order would otherwise be refused. A batch (ccxt ``create_orders``) is refused whole when
    any of its orders is a refused entry. Orders are never retried: a retry can fill twice."""

    __slots__ = (
        "broker",
        "freeze",
        "implied_side",
        "index",
        "markets",
        "names",
        "only_reduces",
        "profile",
    )

    def __init__(self, ctx: GuardContext, spec: MethodSpec, indexes: tuple[int, ...]) -> None:
        self.broker = ctx.broker
        self.freeze = ctx.freeze
        self.markets = ctx.markets
        self.profile = ctx.profile
        self.only_reduces = spec.exit
        self.implied_side = spec.implied_side
        self.index = (*indexes, -1, -1, -1, -1, -1)[:5]  # symbol, side, params, batch, amount
        self.names = (spec.symbol, spec.side, spec.params or "params", spec.batch, spec.amount)

    def enter(self, args: Args, kwargs: Kwargs, *, load: bool = True) -> tuple[Pending, ...] | None:
        """None: the order may go; else the exits still to confirm against the holding. Raises the
        refusal of an entry, or ``MarketsUnknown`` (``load``) for the driver to load the markets
        and ask again."""
        if self.only_reduces:
            return None
        symbol_at, side_at, params_at, batch_at, amount_at = self.index
        symbol_name, side_name, params_name, batch_name, amount_name = self.names
        params = arg(args, kwargs, params_at, params_name)
        if batch_name is None:
            symbol = arg(args, kwargs, symbol_at, symbol_name)
            side = arg(args, kwargs, side_at, side_name) if side_name else self.implied_side
            amount = arg(args, kwargs, amount_at, amount_name) if amount_name else None
            if symbol is not None and not isinstance(symbol, str):  # an order object
                symbol, carried_side, carried_amount, carried = order_fields(symbol)
                side, amount = side or carried_side, amount or carried_amount
                params = params if isinstance(params, Mapping) else carried
            pending = self.judge(symbol, side, amount, params, kwargs, load)
            return None if pending is None else (pending,)
        pendings = []
        for order in arg(args, kwargs, batch_at, batch_name) or ():
            symbol, side, amount, inner = order_fields(order)
            got = self.judge(symbol, side, amount, inner, params, load)
            if got is not None:
                pendings.append(got)
        return tuple(pendings) or None

    def judge(
        self, symbol: Any, side: Any, amount: Any, params: Any, more: Any, load: bool = True
    ) -> Pending | None:
        """Refuse an entry on a symbol the guard does not trust; an exit, an unnamed symbol or a
        trusted one passes. A possible exit comes back pending its holding."""
        if not isinstance(symbol, str) or not symbol.strip():
            # no symbol to judge: only what refuses every symbol applies (a halt, unread state)
            blanket = self.freeze.blanket_refusal(repr(symbol)[:40])
            if blanket is not None:
                raise self.freeze.refused("?", blanket)
            return None
        symbol, refusal = self.market_refusal(symbol, load)
        if refusal is None:
            return None
        canon = canonical_symbol(symbol)
        params = params if isinstance(params, Mapping) else None
        order = gate.Order(
            symbol,
            side_name(side),
            real_number(amount),
            reduce_only(params) or reduce_only(more),
            derivative=self.profile.is_derivative(self.broker, symbol, params),
        )
        intent = gate.intent(order)
        if intent is gate.Intent.EXIT:
            return None
        if intent is gate.Intent.ENTRY:
            raise self.freeze.refused(canon, refusal)
        read = self.profile.holding_read(self.broker, symbol, order.derivative, params)
        return Pending(order, canon, refusal, read)

    def market_refusal(self, symbol: str, load: bool) -> tuple[str, GuardRefusedError | None]:
        """The market the broker will trade ``symbol`` as (a ccxt market id is the market it
        names), and the refusal an entry on it meets. While the broker cannot tell (ccxt markets
        not loaded) the driver is asked to load them (``load``); if it still cannot and anything
        is frozen or restricted, the entry is unconfirmed: it could be on that symbol."""
        markets = self.markets
        named = symbol if markets is None else markets.confirmed(symbol)
        if named is None and load and markets is not None:
            loader = markets.loader()
            if loader is not None:
                raise MarketsUnknown(loader)
        refusal = self.freeze.refusal(canonical_symbol(named or symbol))
        if named is None and refusal is None and self.freeze.blocked:
            refusal = StateUnconfirmedError(
                f"cannot tell which market {symbol!r} is: the exchange's markets did not load "
                "and a symbol is frozen or restricted. Call load_markets() before trading by "
                "market id, or use the unified symbol (BASE/QUOTE).",
                symbol=symbol,
            )
        return named or symbol, refusal

    def confirm(self, pending: Pending, answer: Any, error: BaseException | None) -> None:
        """Let a pending exit go when the holding shows it reduces; else refuse it as an entry."""
        order, read = pending.order, pending.read
        held = None if error is not None or read is None else read.parse(answer)
        if gate.reduces(order, held):
            log.info(
                "%s %s on %s passes as an exit: %s",
                order.side,
                order.amount,
                order.symbol,
                f"it reduces {held}" if held is not None else "on spot a sell cannot go short",
            )
            return
        refusal = pending.refusal
        if error is not None:
            seen = f"the holding could not be read ({read.what if read else ''}: {error})"
        elif read is None:
            seen = "the broker has no way to report the holding"
        else:
            seen = f"{read.what} reports {held}"
        market = "a derivatives or margin market" if order.derivative else "spot"
        note = (
            f" A {order.side} of {order.amount} on {market} is an exit only when it reduces the "
            f"position ({seen}); send it reduce-only (params={{'reduceOnly': True}}) to close."
        )
        error_type = type(refusal)
        raise self.freeze.refused(
            pending.canon, error_type(f"{refusal}{note}", symbol=refusal.symbol)
        )


@dataclass(frozen=True)
class Pending:
    """An order that is an exit only if the holding shows it reduces: what the driver must read."""

    order: gate.Order
    canon: str
    refusal: GuardRefusedError
    read: HoldingRead | None


def order_fields(order: Any) -> tuple[Any, Any, Any, Any]:
    """The symbol, side, amount and params an order object or mapping carries (a batch entry, a
    vendor's order object); an enum symbol by its value."""
    symbol = order.value if isinstance(order, Enum) else readable(order, SYMBOL_KEYS)
    if isinstance(symbol, Enum):
        symbol = symbol.value
    return (
        symbol,
        readable(order, ORDER_SIDE_KEYS),
        readable(order, QUANTITY_KEYS),
        readable(order, PARAMS),
    )


def readable(order: Any, keys: tuple[str, ...]) -> Any:
    """A field of a broker's order object; None when reading it raises (a property that cannot
    answer for this kind of order): unread, as if absent."""
    try:
        return field(order, keys)
    except Exception:  # the object's own error: the field is unreadable, the order still judged
        return None


def side_name(side: Any) -> str | None:
    """An order's side as lower-case text; an enum (``OrderSide.SELL``) by its value."""
    if side is None:
        return None
    value = getattr(side, "value", side)
    return value.strip().lower() if isinstance(value, str) else None


def reduce_only(flags: Any) -> bool:
    """Whether keywords or a params dict mark an order reduce-only: only an explicit true value
    (``True``, ``1``, ``"true"``) counts, so a ``"false"`` string never turns an entry into an
    exit."""
    if not isinstance(flags, Mapping):
        return False
    for key in ("reduceOnly", "reduce_only"):
        value = flags.get(key)
        if value is True or (type(value) is int and value == 1):
            return True
        if isinstance(value, str) and value.strip().lower() in ("true", "1"):
            return True
    return False


class PassBody:
    """A role the guard does not judge (positions): the call goes through as it is."""

    def enter(self, args: Args, kwargs: Kwargs) -> Ticket:
        return None

    def failed(self, ticket: Ticket, exc: BaseException) -> None:
        return None

    def returned(self, ticket: Ticket, value: Any) -> Any:
        return value


PASS = PassBody()


# -- drivers --------------------------------------------------------------------------------


def sync_driver(broker: Any, name: str, body: Body) -> Callable[..., Any]:
    enter, failed, returned = body.enter, body.failed, body.returned

    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            ticket = enter(args, kwargs)
        except AnswerNone:
            return None
        try:
            value = getattr(broker, name)(*args, **kwargs)
        except BaseException as exc:
            failed(ticket, exc)
            raise
        return returned(ticket, value)

    return guarded


def async_driver(broker: Any, name: str, body: Body) -> Callable[..., Any]:
    enter, failed, returned = body.enter, body.failed, body.returned

    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            ticket = enter(args, kwargs)
        except AnswerNone:
            return None
        try:
            value = await getattr(broker, name)(*args, **kwargs)
        except BaseException as exc:
            failed(ticket, exc)
            raise
        return returned(ticket, value)

    return guarded


def sync_batch_driver(broker: Any, name: str, body: TickersBody) -> Callable[..., Any]:
    """Like ``sync_driver``, for a body that rewrites the call's arguments (``fetch_tickers``)."""
    enter, failed, returned = body.enter, body.failed, body.returned

    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        args, kwargs, modes = enter(args, kwargs)
        if modes is not None and not modes:
            return {}  # every symbol asked for is refused: nothing to ask the broker
        try:
            value = getattr(broker, name)(*args, **kwargs)
        except BaseException as exc:
            failed(modes, exc)
            raise
        return returned(modes, value)

    return guarded


def async_batch_driver(broker: Any, name: str, body: TickersBody) -> Callable[..., Any]:
    enter, failed, returned = body.enter, body.failed, body.returned

    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        args, kwargs, modes = enter(args, kwargs)
        if modes is not None and not modes:
            return {}
        try:
            value = await getattr(broker, name)(*args, **kwargs)
        except BaseException as exc:
            failed(modes, exc)
            raise
        return returned(modes, value)

    return guarded


def sync_order_driver(broker: Any, name: str, body: OrderBody) -> Callable[..., Any]:
    """An order: judged, its pending exits confirmed against the holding, then sent once."""
    enter, confirm = body.enter, body.confirm

    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            pending = enter(args, kwargs)
        except MarketsUnknown as unknown:  # what the exchange would do itself, then judged again
            unknown.load()
            pending = enter(args, kwargs, load=False)
        for item in pending or ():
            answer, error = None, None
            if item.read is not None:
                try:
                    answer = item.read.call()
                except Exception as exc:
                    error = exc
            confirm(item, answer, error)
        return getattr(broker, name)(*args, **kwargs)

    return guarded


def async_order_driver(broker: Any, name: str, body: OrderBody) -> Callable[..., Any]:
    enter, confirm = body.enter, body.confirm

    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            pending = enter(args, kwargs)
        except MarketsUnknown as unknown:
            loaded = unknown.load()
            if inspect.isawaitable(loaded):
                await loaded
            pending = enter(args, kwargs, load=False)
        for item in pending or ():
            answer, error = None, None
            if item.read is not None:
                try:
                    answer = item.read.call()
                    if inspect.isawaitable(answer):
                        answer = await answer
                except Exception as exc:
                    error = exc
            confirm(item, answer, error)
        return await getattr(broker, name)(*args, **kwargs)

    return guarded


def balance_method(ctx: GuardContext, name: str, is_async: bool) -> Callable[..., Any]:
    """Balance calls: the fetcher's retry drivers, keyed by account and call signature."""
    broker, fetcher, account = ctx.broker, ctx.balance, ctx.account
    plain_key = (account, name)
    timeout = request_timeout(broker)
    tick = ctx.heartbeat.tick if ctx.heartbeat is not None else _no_beat

    def key(args: Args, kwargs: Kwargs) -> tuple[str, str]:
        return (account, call_signature(name, args, kwargs)) if args or kwargs else plain_key

    if is_async:

        async def guarded_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await fetcher.call_async(
                    getattr(broker, name), args, kwargs, key(args, kwargs)
                )
            finally:
                tick()

        return guarded_async

    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fetcher.call(
                getattr(broker, name), args, kwargs, key(args, kwargs), True, timeout
            )
        finally:
            tick()

    return guarded


def _no_beat() -> None:
    """A guard without a heartbeat (a context built by hand)."""


def request_timeout(broker: Any) -> RequestTimeout | None:
    """A ccxt exchange's request timeout to fit to the balance budget; None for other brokers
    (their deadline is their own: pass them a timeout)."""
    if not is_ccxt(broker):
        return None
    value = getattr(broker, "timeout", None)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return RequestTimeout(broker) if ok else None


def call_signature(name: str, args: Args, kwargs: Kwargs) -> str:
    if not args and not kwargs:
        return name
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
    return f"{name}({', '.join(parts)})"


# -- the generated method --------------------------------------------------------------------


def make_method(
    ctx: GuardContext, name: str, spec: MethodSpec, is_async: bool, indexes: tuple[int, ...]
) -> Callable[..., Any]:
    """The guarded method for broker method ``name``, named and signed like it."""
    broker = ctx.broker
    if spec.role == "balance":
        method: Any = balance_method(ctx, name, is_async)
    elif spec.role == "price" and spec.many:
        batch = TickersBody(ctx, spec, indexes[0], name)
        method = (async_batch_driver if is_async else sync_batch_driver)(broker, name, batch)
    elif spec.role == "order":
        order = OrderBody(ctx, spec, indexes)
        method = (async_order_driver if is_async else sync_order_driver)(broker, name, order)
    else:
        body: Body = PriceBody(ctx, spec, indexes[0]) if spec.role == "price" else PASS
        method = (async_driver if is_async else sync_driver)(broker, name, body)
    return named_like(method, broker, name)


def named_like(method: Any, broker: Any, name: str) -> Callable[..., Any]:
    """Give ``method`` the broker method's name, qualified name, docs and signature, and its code
    object the same names, so tracebacks and ``inspect.signature`` name the real method.

    No ``__wrapped__``: a tool that unwraps must never land on the broker's unguarded function.
    """
    bound = getattr(broker, name)
    function = getattr(bound, "__func__", None)
    own = getattr(bound, "__self__", None) is broker and getattr(function, "__name__", "") == name
    if own and inspect.isfunction(function):
        functools.update_wrapper(method, function, updated=())
        del method.__wrapped__
        qualname = function.__qualname__
        method.__signature__ = _signature(function)
    else:  # an alias, a builtin, a static method, an instance attribute: as it is called
        qualname = f"{type(broker).__qualname__}.{name}"
        method.__name__, method.__qualname__ = name, qualname
        method.__signature__ = _unbound_signature(bound)
    code = method.__code__
    try:
        method.__code__ = code.replace(co_name=name, co_qualname=qualname)
    except TypeError:  # Python 3.10: code objects have no qualified name
        method.__code__ = code.replace(co_name=name)
    named: Callable[..., Any] = method
    return named


def _signature(function: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def _unbound_signature(bound: Any) -> inspect.Signature | None:
    """The signature of a bound method or builtin as its class sees it (with ``self``)."""
    signature = _signature(bound)
    if signature is None:
        return None
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    try:
        return signature.replace(parameters=[self_param, *signature.parameters.values()])
    except ValueError:  # it has a parameter named self already: leave the generic signature
        return None
