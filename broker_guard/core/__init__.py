"""Pure decisions: the freeze state machine, the retry decision, response validation.

Nothing here touches a store, logs, awaits or reads the clock of its own: every
fact (the time, the failure's kind, the records) comes in as an argument and
every decision goes out as a value, so each rule has one copy that every call
path asks.
"""
