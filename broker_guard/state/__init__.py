"""Where shared state lives: the store protocol, memory, JSON files, Redis, and
``store_from_config``.

Nothing is imported here: ``broker_guard.state.redis_store`` needs the optional
``redis`` extra and is loaded only when a configuration names Redis.
"""
