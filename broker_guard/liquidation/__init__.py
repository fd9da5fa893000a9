"""Closing positions safely: positions and their valuation, the close engine, dust, normalization,
the maintenance thread and health. Depends on a guard's context, never on the proxy."""
