"""Recorded-shape answers of Binance (spot) and Kraken for the ccxt tests: markets, tickers,
balances, orders, errors.

Shapes follow the exchanges' public API documentation; the numbers are made up.
Each exchange has a tradable BTC, ETH and DOGE market, a SHIB (Binance) or
XDG-style dust holding, and OLD, a delisted symbol that answers with the
exchange's own "invalid symbol" error.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from ccxt_server import Answer, ExchangeServer, Request

PRICES = {"BTC": 50_000.0, "ETH": 2_500.0, "DOGE": 0.15, "SHIB": 0.00001}
_ids = itertools.count(1000)

# -- Binance spot --------------------------------------------------------------------------------

BINANCE_INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
BINANCE_BAD_KEY = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
BINANCE_RATE_LIMIT = {
    "code": -1003,
    "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE.",
}


def _binance_market(
    base: str, step: str, min_qty: str, tick: str, min_notional: str = "5.00000000"
) -> dict[str, Any]:
    return {
        "symbol": f"{base}USDT",
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": "USDT",
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick,
                "maxPrice": "1000000.00000000",
                "tickSize": tick,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": min_qty,
                "maxQty": "9000000000.00000000",
                "stepSize": step,
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100000000.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": min_notional,
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


BINANCE_MARKETS = {
    "timezone": "UTC",
    "serverTime": 1764000000000,
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
    ],
    "exchangeFilters": [],
    "symbols": [
        _binance_market("BTC", "0.00001000", "0.00001000", "0.01000000"),
        _binance_market("ETH", "0.00010000", "0.00010000", "0.01000000"),
        _binance_market("DOGE", "1.00000000", "1.00000000", "0.00001000", "0.10000000"),
        _binance_market("SHIB", "1.00000000", "1.00000000", "0.00000001", "1.00000000"),
        _binance_market("OLD", "1.00000000", "1.00000000", "0.00000100"),
    ],
}


def _binance_ticker(base: str) -> dict[str, Any]:
    price = PRICES[base]
    return {
        "symbol": f"{base}USDT",
        "priceChange": "0",
        "priceChangePercent": "0.000",
        "weightedAvgPrice": repr(price),
        "prevClosePrice": repr(price),
        "lastPrice": repr(price),
        "lastQty": "1.00000000",
        "bidPrice": repr(price * 0.9999),
        "bidQty": "1.00000000",
        "askPrice": repr(price * 1.0001),
        "askQty": "1.00000000",
        "openPrice": repr(price),
        "highPrice": repr(price),
        "lowPrice": repr(price),
        "volume": "1000.00000000",
        "quoteVolume": repr(price * 1000),
        "openTime": 1763913600000,
        "closeTime": 1764000000000,
        "firstId": 1,
        "lastId": 2,
        "count": 2,
    }


def binance_ticker(request: Request) -> Answer:
    symbol = request.query.get("symbol")
    if symbol is None:  # all tickers, or a JSON list in ``symbols``
        wanted = request.query.get("symbols")
        bases = [b for b in PRICES if wanted is None or f'"{b}USDT"' in wanted]
        if wanted is not None and "OLDUSDT" in wanted:
            return 400, BINANCE_INVALID_SYMBOL
        return 200, [_binance_ticker(b) for b in bases]
    base = symbol.removesuffix("USDT")
    if base not in PRICES:
        return 400, BINANCE_INVALID_SYMBOL
    return 200, _binance_ticker(base)


def binance_account(holdings: dict[str, tuple[str, str]]) -> Any:
    def account(request: Request) -> Answer:
        if "signature" not in request.query:
            return 401, BINANCE_BAD_KEY
        return 200, {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": 1764000000000,
            "accountType": "SPOT",
            "balances": [
                {"asset": a, "free": free, "locked": locked}
                for a, (free, locked) in holdings.items()
            ],
            "permissions": ["SPOT"],
            "uid": 354937868,
        }

    return account


def binance_order(holdings: dict[str, tuple[str, str]]) -> Any:
    def order(request: Request) -> Answer:
        form = {**request.query, **request.form}
        if "signature" not in form:
            return 401, BINANCE_BAD_KEY
        base = form["symbol"].removesuffix("USDT")
        if base not in PRICES:
            return 400, BINANCE_INVALID_SYMBOL
        quantity = float(form["quantity"])
        free, locked = holdings[base]
        if form["side"] == "SELL":
            holdings[base] = (repr(float(free) - quantity), locked)
        now = int(time.time() * 1000)
        executed = repr(quantity)
        return 200, {
            "symbol": form["symbol"],
            "orderId": next(_ids),
            "orderListId": -1,
            "clientOrderId": form.get("newClientOrderId", "x-test"),
            "transactTime": now,
            "price": "0.00000000",
            "origQty": executed,
            "executedQty": executed,
            "cummulativeQuoteQty": repr(quantity * PRICES[base]),
            "status": "FILLED",
            "timeInForce": "GTC",
            "type": "MARKET",
            "side": form["side"],
            "workingTime": now,
            "fills": [],
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    return order


def binance_server(holdings: dict[str, tuple[str, str]]) -> ExchangeServer:
    return ExchangeServer(
        {
            ("GET", "/api/v3/exchangeInfo"): (200, BINANCE_MARKETS),
            ("GET", "/sapi/v1/margin/allPairs"): (
                200,
                [],
            ),  # ccxt asks for margin pairs when keys are set
            ("GET", "/sapi/v1/margin/isolated/allPairs"): (200, []),
            ("GET", "/api/v3/ticker/24hr"): binance_ticker,
            ("GET", "/api/v3/account"): binance_account(holdings),
            ("POST", "/api/v3/order"): binance_order(holdings),
        }
    )


# -- Kraken --------------------------------------------------------------------------------------

KRAKEN_UNKNOWN_PAIR = {"error": ["EQuery:Unknown asset pair"]}
KRAKEN_BAD_KEY = {"error": ["EAPI:Invalid key"]}
KRAKEN_ASSETS = {
    "XXBT": ("XBT", 10, 5),
    "XETH": ("ETH", 10, 5),
    "XXDG": ("XDG", 8, 2),
    "ZUSD": ("USD", 4, 2),
    "OLD": ("OLD", 8, 4),
}
# pair id: (altname, base id, quote id, lot decimals, pair decimals, ordermin, costmin)
KRAKEN_PAIRS = {
    "XXBTZUSD": ("XBTUSD", "XXBT", "ZUSD", 8, 1, "0.00005", "0.5"),
    "XETHZUSD": ("ETHUSD", "XETH", "ZUSD", 8, 2, "0.0001", "0.5"),
    "XDGUSD": ("XDGUSD", "XXDG", "ZUSD", 8, 7, "50", "0.5"),
    "OLDUSD": ("OLDUSD", "OLD", "ZUSD", 8, 4, "10", "0.5"),
}
_KRAKEN_BASE = {"XXBTZUSD": "BTC", "XETHZUSD": "ETH", "XDGUSD": "DOGE"}


def _kraken_pair(pair: str) -> dict[str, Any]:
    alt, base, quote, lot, decimals, ordermin, costmin = KRAKEN_PAIRS[pair]
    return {
        "altname": alt,
        "wsname": f"{KRAKEN_ASSETS[base][0]}/{KRAKEN_ASSETS[quote][0]}",
        "aclass_base": "currency",
        "base": base,
        "aclass_quote": "currency",
        "quote": quote,
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": decimals,
        "lot_decimals": lot,
        "lot_multiplier": 1,
        "leverage_buy": [],
        "leverage_sell": [],
        "fees": [[0, 0.26], [50000, 0.24]],
        "fees_maker": [[0, 0.16], [50000, 0.14]],
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": ordermin,
        "costmin": costmin,
        "tick_size": "0.1" if decimals == 1 else "0." + "0" * (decimals - 1) + "1",
        "status": "online",
    }


def kraken_assets(request: Request) -> Answer:
    result = {
        key: {
            "aclass": "currency",
            "altname": alt,
            "decimals": d,
            "display_decimals": dd,
            "status": "enabled",
        }
        for key, (alt, d, dd) in KRAKEN_ASSETS.items()
    }
    return 200, {"error": [], "result": result}


def kraken_pairs(request: Request) -> Answer:
    return 200, {"error": [], "result": {pair: _kraken_pair(pair) for pair in KRAKEN_PAIRS}}


def kraken_ticker(request: Request) -> Answer:
    pairs = request.query.get("pair", "").split(",")
    result = {}
    for pair in pairs:
        key = next((k for k, v in KRAKEN_PAIRS.items() if pair in (k, v[0])), None)
        if key is None or key not in _KRAKEN_BASE:
            return 200, KRAKEN_UNKNOWN_PAIR
        price = PRICES[_KRAKEN_BASE[key]]
        p = repr(price)
        result[key] = {
            "a": [repr(price * 1.0001), "1", "1.000"],
            "b": [repr(price * 0.9999), "1", "1.000"],
            "c": [p, "0.001"],
            "v": ["100.0", "1000.0"],
            "p": [p, p],
            "t": [100, 1000],
            "l": [p, p],
            "h": [p, p],
            "o": p,
        }
    return 200, {"error": [], "result": result}


def kraken_balance(holdings: dict[str, str]) -> Any:
    def balance(request: Request) -> Answer:
        if "API-Sign" not in request.headers:
            return 200, KRAKEN_BAD_KEY
        return 200, {
            "error": [],
            "result": {
                asset: {"balance": amount, "hold_trade": "0.0000"}
                for asset, amount in holdings.items()
            },
        }

    return balance


def kraken_add_order(holdings: dict[str, str]) -> Any:
    def add_order(request: Request) -> Answer:
        form = request.form
        key = next((k for k, v in KRAKEN_PAIRS.items() if form.get("pair") in (k, v[0])), None)
        if key is None or key not in _KRAKEN_BASE:
            return 200, KRAKEN_UNKNOWN_PAIR
        volume = float(form["volume"])
        base = KRAKEN_PAIRS[key][1]
        if form["type"] == "sell":
            holdings[base] = repr(float(holdings.get(base, "0")) - volume)
        return 200, {
            "error": [],
            "result": {
                "descr": {"order": f"{form['type']} {form['volume']} {form['pair']} @ market"},
                "txid": [f"O{next(_ids)}-TEST-ABCDEF"],
            },
        }

    return add_order


def kraken_server(holdings: dict[str, str]) -> ExchangeServer:
    return ExchangeServer(
        {
            ("GET", "/0/public/Assets"): kraken_assets,
            ("GET", "/0/public/AssetPairs"): kraken_pairs,
            ("GET", "/0/public/Ticker"): kraken_ticker,
            ("POST", "/0/private/BalanceEx"): kraken_balance(holdings),
            ("POST", "/0/private/AddOrder"): kraken_add_order(holdings),
        }
    )


# -- Binance USDⓈ-M futures (swaps: a sell can open a short) ------------------------------------


def _usdm_market(base: str) -> dict[str, Any]:
    return {
        "symbol": f"{base}USDT",
        "pair": f"{base}USDT",
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01",
                "maxPrice": "4529764",
                "tickSize": "0.01",
            },
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.001",
                "maxQty": "120",
                "stepSize": "0.001",
            },
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


USDM_BASES = ("BTC", "ETH", "DOGE")
USDM_INFO = {
    "timezone": "UTC",
    "serverTime": 1764000000000,
    "rateLimits": [],
    "exchangeFilters": [],
    "assets": [],
    "symbols": [_usdm_market(b) for b in USDM_BASES],
}
USDM_BRACKETS = [
    {
        "symbol": f"{b}USDT",
        "brackets": [
            {
                "bracket": 1,
                "initialLeverage": 125,
                "notionalCap": 50000,
                "notionalFloor": 0,
                "maintMarginRatio": 0.004,
                "cum": 0,
            }
        ],
    }
    for b in USDM_BASES
]


def binance_usdm_server(positions: dict[str, float]) -> ExchangeServer:
    """Binance USDⓈ-M futures in one-way mode: ``positions`` maps a base to its signed amount
    (a short below zero); a filled order moves it."""

    def position_risk(request: Request) -> Answer:
        return 200, [
            {
                "symbol": f"{base}USDT",
                "positionSide": "BOTH",
                "positionAmt": repr(amount),
                "entryPrice": repr(PRICES[base]),
                "breakEvenPrice": repr(PRICES[base]),
                "markPrice": repr(PRICES[base]),
                "unRealizedProfit": "0",
                "liquidationPrice": "0",
                "isolatedMargin": "0",
                "notional": repr(amount * PRICES[base]),
                "marginAsset": "USDT",
                "isolatedWallet": "0",
                "initialMargin": "1",
                "maintMargin": "0.1",
                "positionInitialMargin": "1",
                "openOrderInitialMargin": "0",
                "adl": 0,
                "bidNotional": "0",
                "askNotional": "0",
                "updateTime": 1764000000000,
            }
            for base, amount in positions.items()
            if amount
        ]

    def order(request: Request) -> Answer:
        form = {**request.query, **request.form}
        base = form["symbol"].removesuffix("USDT")
        quantity = float(form["quantity"])
        signed = quantity if form["side"] == "BUY" else -quantity
        positions[base] = positions.get(base, 0.0) + signed
        now = int(time.time() * 1000)
        return 200, {
            "orderId": next(_ids),
            "symbol": form["symbol"],
            "status": "FILLED",
            "clientOrderId": form.get("newClientOrderId", "x-test"),
            "price": "0",
            "avgPrice": repr(PRICES[base]),
            "origQty": repr(quantity),
            "executedQty": repr(quantity),
            "cumQuote": repr(quantity * PRICES[base]),
            "timeInForce": "GTC",
            "type": form.get("type", "MARKET"),
            "reduceOnly": form.get("reduceOnly") == "true",
            "closePosition": False,
            "side": form["side"],
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": form.get("type", "MARKET"),
            "updateTime": now,
        }

    return ExchangeServer(
        {
            ("GET", "/fapi/v1/exchangeInfo"): (200, USDM_INFO),
            ("GET", "/fapi/v1/leverageBracket"): (200, USDM_BRACKETS),
            ("GET", "/fapi/v3/positionRisk"): position_risk,
            ("GET", "/fapi/v2/positionRisk"): position_risk,
            ("POST", "/fapi/v1/order"): order,
        }
    )
