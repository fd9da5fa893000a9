"""One guard: the profile of a broker's methods, the context a guard is made of, the freeze and
balance components (core decisions + shared state + logs + events), the per-role call bodies with
their sync and async drivers, and the proxy that installs them."""
