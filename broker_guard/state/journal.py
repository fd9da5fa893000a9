"""The journal's line format: one change set per JSON line, numbered and self-checking.

A line reads ``{"crc":"1a2b3c4d","seq":12,"set":[[["frozen","SIG"],{...}],[["failures","SIG"]]]}``:
``seq`` orders changes across every process sharing the file, each ``set``
entry is a record path with its new value (no value: deleted), and ``crc`` is
the CRC-32 of the line with the ``crc`` member taken out, so a line torn by a
killed writer or damaged on disk is told apart from a good one without
trusting the rest of the file.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker_guard.state.records import RecordPath

_HEAD = b'{"crc":"'
_HEAD_LEN = len(_HEAD) + 8 + 2  # '{"crc":"' + 8 hex digits + '",'
MAX_DEPTH = 64  # deeper JSON is refused before the parser could recurse out of stack
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


class BadLine(ValueError):
    """A complete line that is not a good journal line (damaged, or written by something else)."""


@dataclass(frozen=True)
class Entry:
    """One decoded line: its sequence number and the record changes it carries."""

    seq: int
    changes: tuple[tuple[RecordPath, Any], ...]


def encode(seq: int, changes: Sequence[tuple[RecordPath, Any]]) -> bytes:
    """The line for ``changes`` at ``seq``, newline included. Values must be plain JSON."""
    body = dumps({"seq": seq, "set": change_list(changes)}).encode("ascii")
    crc = zlib.crc32(body)
    return _HEAD + f"{crc:08x}".encode() + b'",' + body[1:] + b"\n"


def dumps(value: Any) -> str:
    """Compact, ordered, ASCII JSON (any symbol, a lone surrogate from undecodable bytes too,
    encodes); NaN and Infinity refused."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def change_list(changes: Sequence[tuple[RecordPath, Any]]) -> list[list[Any]]:
    """``changes`` as the JSON list both stores write: ``[[path, value], [path]]`` (no value:
    deleted)."""
    return [[list(path)] if v is None else [list(path), v] for path, v in changes]


def read_changes(raw: bytes | str) -> tuple[tuple[RecordPath, Any], ...]:
    """The changes a JSON change list holds; ``BadLine`` when it is not one."""
    items = loads(raw)
    if not isinstance(items, list):
        raise BadLine("not a change list")
    return tuple(_change(item) for item in items)


def decode(line: bytes) -> Entry:
    """The entry a complete line (without its newline) holds; ``BadLine`` when it is not one."""
    if not line.startswith(_HEAD) or line[_HEAD_LEN - 2 : _HEAD_LEN] != b'",':
        raise BadLine("not a journal line")
    try:
        crc = int(line[len(_HEAD) : len(_HEAD) + 8], 16)
    except ValueError:
        raise BadLine("unreadable checksum") from None
    body = b"{" + line[_HEAD_LEN:]
    if zlib.crc32(body) != crc:
        raise BadLine("checksum mismatch")
    raw = loads(body)
    seq, entries = raw.get("seq"), raw.get("set")
    if type(seq) is not int or seq < 0 or not isinstance(entries, list):
        raise BadLine("no sequence number or change list")
    return Entry(seq, tuple(_change(item) for item in entries))


def _change(item: Any) -> tuple[RecordPath, Any]:
    if not isinstance(item, list) or len(item) not in (1, 2) or not isinstance(item[0], list):
        raise BadLine(f"malformed change {item!r:.80}")
    path = tuple(item[0])
    if len(path) not in (1, 2) or not all(isinstance(part, str) for part in path):
        raise BadLine(f"malformed record path {item[0]!r:.80}")
    return path, item[1] if len(item) == 2 else None


def loads(raw: bytes | str) -> Any:
    """``json.loads`` for state files: nesting deep enough to exhaust the stack is refused, and
    NaN, Infinity and numbers that overflow a float are kept as their text, so the record holding
    one reads as malformed (and its symbol stays blocked) while the rest of the file is kept."""
    if _too_deep(raw):
        raise BadLine(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise BadLine(str(exc)) from None


def _too_deep(raw: bytes | str) -> bool:
    """Whether brackets outside strings nest deeper than ``MAX_DEPTH``."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for match in _BRACKETS.finditer(_STRINGS.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _no_constant(name: str) -> Any:
    return name


def _finite_float(text: str) -> float | str:
    value = float(text)
    return text if value in (float("inf"), float("-inf")) else value
