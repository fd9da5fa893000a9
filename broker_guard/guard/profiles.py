"""Which methods of which kind of broker play which role: balance, price, positions, order.

A profile is a mapping of method name to ``MethodSpec``. ``GENERIC`` covers
seed-style brokers, ``CCXT`` covers ccxt exchanges (sync and async), and
``Profile.custom`` names the methods of anything else.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from broker_guard.core.validate import market_data, plain_price, ticker_price
from broker_guard.guard.exposure import (
    HoldingRead,
    Params,
    ccxt_derivative,
    ccxt_holding,
    positions_holding,
)
from broker_guard.guard.markets import SymbolLookup, ccxt_load_markets, ccxt_market_symbol

ROLES = ("balance", "price", "positions", "order")
AMOUNT_NAMES = ("amount", "quantity", "qty", "size", "volume", "units")
# what a broker's own methods call their symbol and side parameters, when not ``symbol``/``side``
SYMBOL_NAMES = ("symbol", "ticker", "pair", "instrument", "instrument_id", "product_id")
SIDE_NAMES = ("side", "direction", "action", "order_side")
# a first parameter named like these is not the symbol, whatever its position
NOT_SYMBOL = frozenset({*SIDE_NAMES, *AMOUNT_NAMES, "price", "type", "order_type", "params"})


@dataclass(frozen=True)
class MethodSpec:
    """How one broker method is guarded.

    ``symbol``: the parameter naming the symbol (name; its position is read from
    the method's signature). ``side``: the parameter holding buy/sell for
    orders; ``implied_side``: the side a method without one stands for (``buy()``,
    ``create_market_sell_order``). ``amount``: the order's quantity parameter (found
    from the signature when not given). ``exit``: the method can only reduce a
    position whatever the market (``close_position``, reduce-only helpers); a plain
    sell is not that on margin or derivatives. ``price``: turns the method's return
    value into a price, None when invalid.
    """

    role: str
    symbol: str | None = None
    side: str | None = None
    exit: bool = False
    price: Callable[[Any], float | None] = plain_price
    many: bool = False  # price role over a list of symbols (ccxt fetch_tickers)
    params: str | None = None  # an order's extra-parameters dict (ccxt ``params``: reduceOnly)
    batch: str | None = None  # an order method taking a list of orders (ccxt ``create_orders``)
    implied_side: str | None = None
    amount: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.role in ("price", "order") and self.symbol is None and self.batch is None:
            raise ValueError(f"a {self.role} method needs the name of its symbol parameter")


@dataclass(frozen=True)
class Profile:
    name: str
    methods: Mapping[str, MethodSpec] = field(default_factory=dict)
    # finds more role methods on the broker itself (ccxt: every unified order method and every
    # alias of a guarded method), so a method a later release adds is guarded too
    discover: Callable[[object], Mapping[str, MethodSpec]] | None = None
    # every order is on margin or derivatives (a sell can open a short); ``market`` decides per
    # order instead (ccxt: the market's type)
    derivatives: bool = False
    market: Callable[[object, str, Params], bool] | None = None
    # how to read the holding an order would reduce; default: the profile's positions method
    holding: Callable[[object, str, bool, Params], HoldingRead] | None = None
    # the market the broker reads a symbol as (ccxt: a market id ``BTCUSDT`` is ``BTC/USDT``), so
    # an id does not get round a freeze; None: symbols are taken as written
    market_symbol: SymbolLookup | None = None
    load_markets: Callable[[object], Any] | None = None  # lets ``market_symbol`` tell (ccxt)

    def is_derivative(self, broker: object, symbol: str, params: Params) -> bool:
        if self.derivatives:
            return True
        return self.market(broker, symbol, params) if self.market is not None else False

    def holding_read(
        self, broker: object, symbol: str, derivative: bool, params: Params
    ) -> HoldingRead | None:
        """How to read what ``broker`` holds of ``symbol``; None when it has no way to say."""
        if self.holding is not None:
            return self.holding(broker, symbol, derivative, params)
        name = self.first(broker, "positions")
        return positions_holding(getattr(broker, name), symbol, name) if name else None

    def present(self, broker: object) -> dict[str, MethodSpec]:
        """The profile's methods that ``broker`` really has (callable attributes)."""
        found = dict(self.discover(broker)) if self.discover is not None else {}
        found.update(self.methods)
        return {n: s for n, s in found.items() if callable(getattr(broker, n, None))}

    def first(self, broker: object, role: str) -> str | None:
        """The broker's first method (in profile order) that plays ``role``."""
        return next(
            (
                n
                for n, s in self.methods.items()
                if s.role == role and callable(getattr(broker, n, None))
            ),
            None,
        )

    @classmethod
    def custom(
        cls,
        mapping: Mapping[str, str | MethodSpec],
        *,
        base: Profile | None = None,
        name: str = "custom",
        derivatives: bool = False,
    ) -> Profile:
        """Name your broker's methods: ``{"quote": MethodSpec("price", symbol="ticker"), "cash":
        "balance"}``. ``derivatives=True``: the broker trades margin or derivatives, where a
        sell is an exit only when it reduces the reported position."""
        methods = dict(base.methods) if base is not None else {}
        for method, spec in mapping.items():
            if isinstance(spec, str):
                spec = MethodSpec(spec, symbol="symbol" if spec in ("price", "order") else None)
            if not isinstance(spec, MethodSpec):
                raise TypeError(
                    f"profile entry {method!r} must be a role name or a MethodSpec, got {spec!r}"
                )
            methods[method] = spec
        if base is None:
            return cls(name, methods, derivatives=derivatives)
        return replace(base, name=name, methods=methods, derivatives=derivatives)


def _order(side: str | None = "side", implied: str | None = None, exit: bool = False) -> MethodSpec:
    return MethodSpec("order", symbol="symbol", side=side, implied_side=implied, exit=exit)


GENERIC = Profile(
    "generic",
    {
        "get_account_balance": MethodSpec("balance"),
        "get_balance": MethodSpec("balance"),
        "get_usd_balance": MethodSpec("balance"),
        "get_available_balance": MethodSpec("balance"),
        "get_current_price": MethodSpec("price", symbol="symbol"),
        "get_price": MethodSpec("price", symbol="symbol"),
        "get_last_price": MethodSpec("price", symbol="symbol"),
        "get_positions": MethodSpec("positions"),
        "get_all_positions": MethodSpec("positions"),
        "get_open_positions": MethodSpec("positions"),
        "place_market_order": _order(),
        "place_order": _order(),
        "submit_order": _order(),
        "create_market_order": _order(),
        "buy": _order(side=None, implied="buy"),
        "sell": _order(side=None, implied="sell"),
        "close_position": _order(side=None, exit=True),
    },
)

SIDES = ("buy", "sell")
CCXT_ORDER_METHOD = re.compile(r"^(create|edit)_\w*order")  # ccxt's unified order methods


def ccxt_methods(broker: object) -> dict[str, MethodSpec]:
    """Every unified order method of a ccxt exchange (``create_*order*``, ``edit_*order*``, the
    batch and websocket ones), read from its class, and the camelCase alias ccxt defines for each
    guarded method (``createOrder`` is ``create_order``)."""
    cls = type(broker)
    found: dict[str, MethodSpec] = {}
    for name in dir(cls):
        function = getattr(cls, name, None)
        if CCXT_ORDER_METHOD.match(name) and inspect.isfunction(function):
            found[name] = ccxt_order_spec(name, function)
    guarded = {**CCXT.methods, **found}
    by_function = {id(getattr(cls, n, None)): n for n in guarded if hasattr(cls, n)}
    for name in dir(cls):
        snake = by_function.get(id(getattr(cls, name, None)))
        if snake is not None and name != snake and not name.startswith("_"):
            found[name] = guarded[snake]
    return found


def ccxt_order_spec(name: str, function: Callable[..., Any]) -> MethodSpec:
    """How a ccxt order method names its symbol, side, amount and params; a method without a side
    parameter takes it from its name (``create_limit_buy_order``)."""
    try:
        params = set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        params = set()
    words = set(name.split("_"))
    return MethodSpec(
        "order",
        symbol="symbol" if "symbol" in params or "orders" not in params else None,
        side="side" if "side" in params else None,
        implied_side=None
        if "side" in params
        else next((w for w in ("buy", "sell") if w in words), None),
        exit={"reduce", "only"} <= words,
        params="params" if "params" in params else None,
        batch="orders" if "orders" in params else None,
        amount="amount" if "amount" in params else None,
    )


MARKET_DATA = (
    "fetch_order_book",
    "fetch_l2_order_book",
    "fetch_ohlcv",
    "fetch_trades",
    "fetch_funding_rate",
    "fetch_mark_price",
)

CCXT = Profile(
    "ccxt",
    {
        "fetch_balance": MethodSpec("balance"),
        "fetch_free_balance": MethodSpec("balance"),
        "fetch_total_balance": MethodSpec("balance"),
        "fetch_used_balance": MethodSpec("balance"),
        "fetch_ticker": MethodSpec("price", symbol="symbol", price=ticker_price),
        "fetch_tickers": MethodSpec("price", symbol="symbols", price=ticker_price, many=True),
        # symbol-scoped market data: refused for a frozen or restricted symbol, failures counted
        **{name: MethodSpec("price", symbol="symbol", price=market_data) for name in MARKET_DATA},
        "fetch_positions": MethodSpec("positions"),
    },
    discover=ccxt_methods,
    market=ccxt_derivative,
    holding=ccxt_holding,
    market_symbol=ccxt_market_symbol,
    load_markets=ccxt_load_markets,
)

PROFILES = {"generic": GENERIC, "ccxt": CCXT}


def is_ccxt(broker: object) -> bool:
    return any(c.__module__.split(".", 1)[0] == "ccxt" for c in type(broker).__mro__)


def resolve_profile(
    broker: object, profile: str | Profile | Mapping[str, str | MethodSpec] = "auto"
) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, Mapping):
        return Profile.custom(profile, base=CCXT if is_ccxt(broker) else GENERIC)
    if profile == "auto":
        return CCXT if is_ccxt(broker) else GENERIC
    if profile in PROFILES:
        return PROFILES[profile]
    raise ValueError(
        f"profile must be 'auto', {', '.join(map(repr, PROFILES))}, a Profile or a mapping; got "
        f"{profile!r}"
    )


def param_index(func: Callable[..., Any], name: str | None) -> int:
    """Position of parameter ``name`` in a bound method's call, -1 when it is keyword-only or
    absent."""
    if name is None:
        return -1
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return 0
    for index, param in enumerate(params):
        if param.name == name:
            return (
                index if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) else -1
            )
    if name != "symbol" or not params or params[0].kind == param.VAR_KEYWORD:
        return -1
    return -1 if params[0].name in NOT_SYMBOL else 0  # a bare first parameter: the symbol


def fitted(spec: MethodSpec, func: Callable[..., Any]) -> MethodSpec:
    """``spec`` with its parameter names as ``func`` spells them: a symbol or side parameter
    under another usual name (``ticker``, ``pair``, ``direction``) and an order's amount,
    found from the signature, so ``place_order(side, pair, qty)`` is read right."""
    if spec.role not in ("price", "order"):
        return spec
    try:
        names = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return spec
    changes: dict[str, Any] = {}
    for attr, usual in (("symbol", SYMBOL_NAMES), ("side", SIDE_NAMES)):
        current = getattr(spec, attr)
        if current is not None and current not in names:
            # only a parameter every call must give: an optional ``instrument=None`` is a flag
            found = next((n for n in usual if n in names and _required(names[n])), None)
            if found is not None:
                changes[attr] = found
    if spec.role == "order" and spec.amount is None:
        amount = next((n for n in AMOUNT_NAMES if n in names), None)
        if amount is not None:
            changes["amount"] = amount
    return replace(spec, **changes) if changes else spec


def _required(param: inspect.Parameter) -> bool:
    return param.default is param.empty and param.kind in (
        param.POSITIONAL_ONLY,
        param.POSITIONAL_OR_KEYWORD,
        param.KEYWORD_ONLY,
    )


def positional_params(func: Callable[..., Any]) -> int:
    """How many parameters ``func`` takes positionally (0 when its signature cannot be read)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 0
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def accepts_keyword(func: Callable[..., Any], name: str) -> bool:
    """Whether ``func`` takes ``name`` as a keyword (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def account_key(broker: object, configured: str | None = None) -> str:
    """Which account a broker object is, so cached balances are never served to another account.

    An explicit ``guard.account`` wins; ccxt exchanges are their id plus a hash of
    the API key; other brokers their class and an account id attribute if any.
    """
    if configured:
        return configured
    name = type(broker).__qualname__
    for attr in ("account_id", "account_name", "account", "user_id", "apiKey", "api_key"):
        try:
            value = getattr(broker, attr, None)
        except Exception:
            continue
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            if attr in ("apiKey", "api_key"):
                value = "key-" + hashlib.sha256(str(value).encode()).hexdigest()[:12]
            exchange = getattr(broker, "id", None) if is_ccxt(broker) else None
            return f"{exchange or name}:{value}"
    exchange_id = getattr(broker, "id", None) if is_ccxt(broker) else None
    return str(exchange_id or name)
