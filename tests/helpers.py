"""Small helpers shared by several test modules."""

from __future__ import annotations

from typing import Any

import pytest


def fail_price_calls(guard: Any, symbol: str, times: int = 3) -> None:
    """``times`` price calls on a symbol the paper broker has delisted, each failing with its own
    error."""
    for _ in range(times):
        with pytest.raises(Exception, match="Price not available"):
            guard.get_current_price(symbol)
