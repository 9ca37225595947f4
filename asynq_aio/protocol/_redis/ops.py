"""What a batch is made of: plain commands and Lua script calls (with their SHA1 for EVALSHA).

Kept apart from the transport (transport.py) so that the protocol modules can build ops (and tests
can build their own) without touching the code that talks to redis-py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EncodableArg = str | bytes | int | float

_SCRIPT_DIR = Path(__file__).parent.parent / "scripts"  # asynq_aio/protocol/scripts


class LuaScript:
    """A Lua script with its SHA1, loaded lazily: EVALSHA first, EVAL when the node lacks it."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def load(cls, name: str, directory: Path = _SCRIPT_DIR) -> LuaScript:
        """The script ``<name>.lua`` of ``directory`` (by default the package's protocol/scripts)."""
        return cls(name, (directory / f"{name}.lua").read_text())

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r})"


@dataclass(frozen=True, slots=True)
class Op:
    """One command of a batch: a plain command, or a script call (``script`` set, args after the keys)."""

    args: tuple[EncodableArg, ...]
    script: LuaScript | None = None
    nkeys: int = 0

    @classmethod
    def command(cls, *args: EncodableArg) -> Op:
        """A plain command: its name and arguments, as ``execute_command`` takes them."""
        return cls(args)

    @classmethod
    def eval(cls, script: LuaScript, keys: Sequence[str], args: Sequence[EncodableArg]) -> Op:
        """A call of ``script`` with ``keys`` (declared, so a cluster routes it by them) and ``args``."""
        return cls((*keys, *args), script, len(keys))

    def wire(self, *, by_sha: bool = True) -> tuple[EncodableArg, ...]:
        """The command as sent: a plain command as is, a script call as EVALSHA (or EVAL with
        ``by_sha=False``, for a node that lacks the script) with its key count."""
        if self.script is None:
            return self.args
        head: tuple[EncodableArg, ...] = (
            ("EVALSHA", self.script.sha) if by_sha else ("EVAL", self.script.source)
        )
        return (*head, self.nkeys, *self.args)
