"""Helpers for the Go asynq v0.26 golden fixtures in ``tests/fixtures/asynq-go-0.26``.

The files are what a real Go Asynq v0.26.0 wrote and printed (its README says how they were
recorded); they live in the repository so the tests read nothing outside it.

Loads the JSON files, parses ``protoc --decode_raw`` text into field numbers and values, and turns the
Go enqueue options a record lists (``MaxRetry(5)``, ``Timeout(90s)`` ...) into ``Client.enqueue``
keyword arguments.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "asynq-go-0.26"

# One decoded protobuf field as ``protoc --decode_raw`` prints it: varints as ints, length-delimited
# fields as bytes, or as a nested field list when protoc could parse them as a message.
RawValue = int | bytes | list["RawField"]
RawField = tuple[int, RawValue]


@cache
def load_json(name: str) -> Any:
    with (FIXTURES_DIR / name).open(encoding="utf-8") as f:
        return json.load(f)


def task_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = load_json("tasks.json")
    return records


def task_record(queue: str) -> dict[str, Any]:
    for rec in task_records():
        if rec["queue"] == queue:
            return rec
    raise KeyError(f"no Go fixture record for queue {queue!r}")


def b64(field: dict[str, Any]) -> bytes:
    """The raw bytes of a ``{"b64": ..., "utf8": ...}`` value."""
    return base64.b64decode(field["b64"])


def hash_bytes(fields: dict[str, Any]) -> dict[str, bytes]:
    return {name: b64(value) for name, value in fields.items()}


# -- protoc --decode_raw --------------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "n": 0x0A,
    "r": 0x0D,
    "t": 0x09,
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "v": 0x0B,
    "\\": 0x5C,
    "'": 0x27,
    '"': 0x22,
    "?": 0x3F,
}


def _unescape_c(text: str) -> bytes:
    """Undo protoc's C-style escaping of a quoted string (``\\"``, ``\\n``, octal ``\\ooo``, ``\\xHH``)."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", text[i + 1 :])
            assert m is not None
            out.append(int(m.group(0), 8) & 0xFF)
            i += 1 + len(m.group(0))
        elif nxt == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", text[i + 2 :])
            assert m is not None, f"bad \\x escape in {text!r}"
            out.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        else:
            raise ValueError(f"unknown escape \\{nxt} in {text!r}")
    return bytes(out)


_LINE = re.compile(r"^(\d+)(?:: (.*)| \{)$")


def parse_decode_raw(text: str) -> list[RawField]:
    """Parse ``protoc --decode_raw`` output into ``[(field number, value), ...]`` in print order."""
    stack: list[list[RawField]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line == "}":
            done = stack.pop()
            stack[-1][-1] = (stack[-1][-1][0], done)
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"unparsable decode_raw line: {line!r}")
        num = int(m.group(1))
        value = m.group(2)
        if value is None:  # "N {": a nested message follows
            stack[-1].append((num, []))
            stack.append([])
        elif value.startswith('"'):
            assert value.endswith('"') and len(value) >= 2, line
            stack[-1].append((num, _unescape_c(value[1:-1])))
        else:
            stack[-1].append((num, int(value, 0)))
    if len(stack) != 1:
        raise ValueError("unbalanced braces in decode_raw text")
    return stack[0]


def raw_to_field_values(raw: list[RawField], message: type[Message]) -> dict[str, Any]:
    """Read decode_raw fields through ``message``'s descriptor: ``{field name: python value}``.

    Map fields become dicts, strings str, bytes bytes, integers and bools int/bool, and a nested
    message (e.g. a Timestamp) a dict of its own field names. Repeated scalars become lists.
    """
    out: dict[str, Any] = {}
    by_number = message.DESCRIPTOR.fields_by_number
    for num, value in raw:
        fd = by_number[num]
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            assert isinstance(value, list), f"map field {fd.name} printed as a scalar"
            entry = dict(value)
            key_fd = fd.message_type.fields_by_name["key"]
            val_fd = fd.message_type.fields_by_name["value"]
            out.setdefault(fd.name, {})[_scalar(key_fd, entry.get(1, b""))] = _scalar(
                val_fd, entry.get(2, 0 if val_fd.type != FieldDescriptor.TYPE_STRING else b"")
            )
        elif fd.message_type is not None:
            assert isinstance(value, list), f"message field {fd.name} printed as a scalar"
            sub = fd.message_type
            out[fd.name] = {sub.fields_by_number[n].name: v for n, v in value}
        elif fd.is_repeated:
            out.setdefault(fd.name, []).append(_scalar(fd, value))
        else:
            out[fd.name] = _scalar(fd, value)
    return out


def _scalar(fd: Any, value: RawValue) -> Any:  # a python or upb FieldDescriptor
    if fd.type == FieldDescriptor.TYPE_STRING:
        assert isinstance(value, bytes), f"{fd.name}: expected a string, got {value!r}"
        return value.decode("utf-8")
    if fd.type == FieldDescriptor.TYPE_BYTES:
        assert isinstance(value, bytes), f"{fd.name}: expected bytes, got {value!r}"
        return value
    assert isinstance(value, int), f"{fd.name}: expected a varint, got {value!r}"
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return bool(value)
    return value


def message_field_values(msg: Message) -> dict[str, Any]:
    """``{name: value}`` of the fields ``msg`` has set (ListFields), maps as dicts, messages recursively."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            out[fd.name] = dict(value)
        elif fd.message_type is not None:
            out[fd.name] = message_field_values(value)
        elif fd.is_repeated:
            out[fd.name] = list(value)
        else:
            out[fd.name] = value
    return out


# -- Go enqueue options ---------------------------------------------------------------------------

_GO_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_GO_OPTION = re.compile(r"^(\w+)\((.*)\)$")


def go_duration_s(text: str) -> int:
    """Seconds of a Go duration as the fixtures write them (``1h``, ``90s``, ``2m``, ``48h``)."""
    m = _GO_DURATION.match(text)
    if m is None or not text:
        raise ValueError(f"unsupported Go duration {text!r}")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def go_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_go_options(options: list[str]) -> dict[str, Any]:
    """``['Queue("q")', 'MaxRetry(5)', ...]`` as ``{option name: parsed argument}``."""
    out: dict[str, Any] = {}
    for opt in options:
        m = _GO_OPTION.match(opt)
        if m is None:
            raise ValueError(f"unparsable Go option {opt!r}")
        name, arg = m.group(1), m.group(2)
        if arg.startswith('"'):
            out[name] = json.loads(arg)
        elif name in {"ProcessIn", "Unique", "Timeout", "Retention"}:
            out[name] = go_duration_s(arg)
        elif name in {"ProcessAt", "Deadline"}:
            out[name] = go_time(arg)
        elif name == "MaxRetry":
            out[name] = int(arg)
        else:
            raise ValueError(f"unknown Go option {opt!r}")
    return out


def enqueue_kwargs(go_options: dict[str, Any]) -> dict[str, Any]:
    """``Client.enqueue`` keyword arguments for the parsed Go options (queue and ProcessAt excluded:
    the caller maps the queue name, and a fixed ProcessAt would be in the past by the time tests run)."""
    names = {
        "ProcessIn": "process_in",
        "Unique": "unique",
        "Timeout": "timeout",
        "Retention": "retention",
        "Deadline": "deadline",
        "MaxRetry": "max_retry",
        "TaskID": "task_id",
        "Group": "group",
    }
    return {names[k]: v for k, v in go_options.items() if k in names}
