"""A handler's return value as the task's result, and back.

The result is stored as bytes in the task hash's ``result`` field, where Go's ``ResultWriter``
puts it, so Go programs, the Go CLI and asynqmon read it too. Bytes are stored as they are, text as
UTF-8 and everything else as JSON (pydantic models with their aliases), the form a Go reader
expects; ``None`` stores nothing.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticSerializationError, to_json

from asynq_aio._errors import AsynqError, SkipRetry

T = TypeVar("T")


class ResultEncodingError(SkipRetry):
    """A handler returned a value that cannot be stored as a result. Its work is done, so running it
    again would repeat the work and fail the same way: the task is archived with this error."""


def encode_result(value: object) -> bytes | None:
    """A handler's return value as the bytes stored as its result (None stores nothing): bytes as they are,
    str as UTF-8, anything else as JSON; raises ResultEncodingError when it cannot be."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, BaseModel):
        return value.model_dump_json(by_alias=True).encode()
    try:
        return to_json(value, by_alias=True)
    except PydanticSerializationError as exc:
        raise ResultEncodingError(
            f"the handler returned a {type(value).__name__}, which cannot be stored as a result "
            f"(return bytes, str, a pydantic model or JSON-able data): {exc}"
        ) from exc


@overload
def decode_result(data: bytes, as_type: None = None) -> bytes:
    """Without ``as_type``: the stored bytes as they are."""


@overload
def decode_result(data: bytes, as_type: type[T]) -> T:
    """With ``as_type``: the stored bytes parsed as that type."""


def decode_result(data: bytes, as_type: type[Any] | None = None) -> Any:
    """The stored bytes, or parsed as ``as_type`` (a model, ``str``, or any type pydantic reads
    from JSON); raises ResultDecodingError when they do not fit."""
    if as_type is None or as_type is bytes:
        return data
    if as_type is str:
        return data.decode()
    try:
        if isinstance(as_type, type) and issubclass(as_type, BaseModel):
            return as_type.model_validate_json(data)
        return TypeAdapter(as_type).validate_json(data)
    except ValueError as exc:
        raise ResultDecodingError(f"the task's result does not parse as {as_type!r}: {exc}") from exc


class ResultDecodingError(AsynqError, ValueError):
    """A stored result does not parse as the type the caller asked for."""
