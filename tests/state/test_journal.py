"""The journal against a dict model: writes from two stores, torn lines from killed writers,
compactions, restarts and an incremental reader must all agree with the model, always."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker_guard import JsonFileStore
from broker_guard.state import journal, records
from broker_guard.state.records import ChangeLog

SYMBOLS = st.sampled_from(["SIG", "TOKEN", "AUTH", "BTC/USD", 'QU"OTE', "ÉTÉ"])
SECTIONS = st.sampled_from(["frozen", "failures"])
VALUES = st.one_of(
    st.none(),
    st.fixed_dictionaries({"count": st.integers(0, 10**6)}),
    st.fixed_dictionaries({"reason": st.text(max_size=20)}),
)


def test_a_line_round_trips_and_damage_is_detected() -> None:
    line = journal.encode(7, [(("frozen", "SIG"), {"n": 1.5}), (("failures", "SIG"), None)])
    entry = journal.decode(line.rstrip(b"\n"))
    assert entry.seq == 7 and entry.changes == (
        (("frozen", "SIG"), {"n": 1.5}),
        (("failures", "SIG"), None),
    )
    with pytest.raises(journal.BadLine, match="checksum"):
        journal.decode(line.rstrip(b"\n").replace(b"1.5", b"2.5"))
    with pytest.raises(journal.BadLine):
        journal.decode(b'{"seq": 1}')


def test_a_batch_larger_than_the_change_log_makes_readers_load_everything() -> None:
    log = ChangeLog(size=4)
    for i in range(6):
        log.add(1, ("frozen", f"S{i}"), {"n": i})
    assert log.since(0) is None  # part of seq 1 was pushed out: not a partial answer
    log.add(2, ("frozen", "S9"), {"n": 9})
    assert [c.path for c in log.since(1) or []] == [("frozen", "S9")]


def test_diff_and_apply_agree() -> None:
    before = {"frozen": {"A": {"n": 1}, "B": {"n": 2}}, "n": 1}
    after = {"frozen": {"A": {"n": 1}, "C": {"n": 3}}, "n": 2}
    state = {"frozen": {"A": {"n": 1}, "B": {"n": 2}}, "n": 1}
    for path, value in records.diff(before, after):
        records.apply(state, path, value)
    assert state == after


class JournalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.a = JsonFileStore(self.dir, compact_in_background=False, compact_after=7)
        self.b = JsonFileStore(self.dir, compact_in_background=False, compact_after=7)
        self.reader = JsonFileStore(self.dir)
        self.model: dict[str, dict[str, Any]] = {}
        self.cursor, self.seen = self.reader.load("s")

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _set(self, store: JsonFileStore, section: str, key: str, value: Any) -> None:
        def change(doc: dict[str, Any]) -> None:
            if value is None:
                doc.get(section, {}).pop(key, None)
            else:
                doc.setdefault(section, {})[key] = value

        store.update("s", change, keys=[(section, key)])
        if value is None:
            self.model.get(section, {}).pop(key, None)
            if section in self.model and not self.model[section]:
                del self.model[section]
        else:
            self.model.setdefault(section, {})[key] = value

    @rule(section=SECTIONS, key=SYMBOLS, value=VALUES)
    def write_a(self, section: str, key: str, value: Any) -> None:
        self._set(self.a, section, key, value)

    @rule(section=SECTIONS, key=SYMBOLS, value=VALUES)
    def write_b(self, section: str, key: str, value: Any) -> None:
        self._set(self.b, section, key, value)

    @rule(cut=st.integers(1, 40))
    def writer_killed_mid_line(self, cut: int) -> None:
        line = journal.encode(10**6, [(("frozen", "KILLED"), {"n": 1})])
        with open(self.dir / "s.journal", "ab") as handle:
            handle.write(line[: min(cut, len(line) - 1)])  # never the newline: never acked

    @rule()
    def compact(self) -> None:
        self.a.compact("s")

    @precondition(lambda self: True)
    @rule()
    def restart_b(self) -> None:
        self.b = JsonFileStore(self.dir, compact_in_background=False, compact_after=7)

    @rule()
    def read_incrementally(self) -> None:
        got = self.reader.changes("s", self.cursor)
        if got is None:
            self.cursor, self.seen = self.reader.load("s")
            return
        self.cursor, changes = got
        for change in changes:
            records.apply(self.seen, change.path, change.value)

    @invariant()
    def readers_agree_with_the_model(self) -> None:
        self.read_incrementally()
        assert self.seen == self.model
        assert self.a.read("s") == self.model


TestJournal = JournalMachine.TestCase
TestJournal.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
