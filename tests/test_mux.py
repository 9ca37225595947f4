"""ServeMux: routing by longest prefix, middleware order, typed handlers (no Redis needed)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from asynq_aio import HandlerNotFoundError, PayloadValidationError, ServeMux, Task
from asynq_aio._handler import Handler

pytestmark = pytest.mark.anyio


class EmailPayload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    to: int
    from_: int = Field(alias="from")


def _recorder(calls: list[str], name: str) -> Handler:
    async def handler(task: Task) -> None:
        calls.append(f"{name}:{task.type}")

    return handler


async def test_longest_prefix_wins() -> None:
    calls: list[str] = []
    mux = ServeMux()
    mux.handle_func("email:", _recorder(calls, "email"))
    mux.handle_func("email:welcome", _recorder(calls, "welcome"))
    mux.handle_func("e", _recorder(calls, "e"))

    await mux(Task("email:welcome"))
    await mux(Task("email:welcome:v2"))
    await mux(Task("email:reset"))
    await mux(Task("export"))

    assert calls == [
        "welcome:email:welcome",
        "welcome:email:welcome:v2",
        "email:email:reset",
        "e:export",
    ]
    assert mux.patterns == ["e", "email:", "email:welcome"]


async def test_unknown_type_raises_handler_not_found() -> None:
    mux = ServeMux()
    mux.handle_func("email:", _recorder([], "email"))

    assert mux.handler_for("sms:send") is None
    with pytest.raises(HandlerNotFoundError, match="no handler registered for task type 'sms:send'"):
        await mux(Task("sms:send"))
    # a prefix match must be a real prefix: "emai" does not match "email:"
    with pytest.raises(HandlerNotFoundError):
        await mux(Task("emai"))


async def test_middleware_order_first_given_is_outermost() -> None:
    events: list[str] = []

    def mw(name: str) -> Any:
        def wrap(next_handler: Handler) -> Handler:
            async def wrapped(task: Task) -> None:
                events.append(f"{name}:before")
                await next_handler(task)
                events.append(f"{name}:after")

            return wrapped

        return wrap

    async def handler(task: Task) -> None:
        events.append("handler")

    mux = ServeMux()
    mux.handle_func("job", handler)
    mux.use(mw("outer"), mw("middle"))
    mux.use(mw("inner"))

    await mux(Task("job"))

    assert events == [
        "outer:before",
        "middle:before",
        "inner:before",
        "handler",
        "inner:after",
        "middle:after",
        "outer:after",
    ]


async def test_middleware_added_after_first_dispatch_still_applies() -> None:
    events: list[str] = []

    async def handler(task: Task) -> None:
        events.append("handler")

    def mw(next_handler: Handler) -> Handler:
        async def wrapped(task: Task) -> None:
            events.append("mw")
            await next_handler(task)

        return wrapped

    mux = ServeMux()
    mux.handle_func("job", handler)
    await mux(Task("job"))
    mux.use(mw)
    await mux(Task("job"))

    assert events == ["handler", "mw", "handler"]


async def test_typed_handler_receives_validated_model_with_alias() -> None:
    got: list[EmailPayload] = []
    mux = ServeMux()

    @mux.task("email:send")
    async def send(payload: EmailPayload) -> None:
        got.append(payload)

    # the decorator returns the function itself, still callable directly
    await send(EmailPayload.model_validate({"to": 1, "from": 2}))
    await mux(Task("email:send", {"to": 123, "from": 456}))

    assert [(p.to, p.from_) for p in got] == [(1, 2), (123, 456)]


async def test_typed_handler_invalid_payload_raises_payload_validation_error() -> None:
    mux = ServeMux()
    ran: list[EmailPayload] = []

    @mux.task("email:send")
    async def send(payload: EmailPayload) -> None:
        ran.append(payload)

    with pytest.raises(PayloadValidationError) as excinfo:
        await mux(Task("email:send", {"to": "not a number"}))
    text = str(excinfo.value)
    assert "EmailPayload" in text
    assert "to" in text
    assert "from" in text  # the missing field is named too
    with pytest.raises(PayloadValidationError):
        await mux(Task("email:send", b"\xffnot json"))
    assert ran == []


async def test_task_annotated_handler_gets_the_task() -> None:
    got: list[Task] = []
    mux = ServeMux()

    async def handler(task: Task) -> None:
        got.append(task)

    async def unannotated(task):  # type: ignore[no-untyped-def]
        got.append(task)

    mux.handle_func("a", handler)
    mux.handle_func("b", unannotated)
    await mux(Task("a", b"raw"))
    await mux(Task("b", b"raw2"))

    assert [(t.type, t.payload) for t in got] == [("a", b"raw"), ("b", b"raw2")]


def test_wrong_handler_signatures_raise_type_error() -> None:
    mux = ServeMux()

    async def two_params(task: Task, extra: int) -> None:
        pass

    async def no_params() -> None:
        pass

    def not_async(task: Task) -> None:
        pass

    async def bad_annotation(payload: int) -> None:
        pass

    with pytest.raises(TypeError, match="exactly one parameter"):
        mux.handle_func("a", two_params)
    with pytest.raises(TypeError, match="exactly one parameter"):
        mux.handle_func("b", no_params)
    with pytest.raises(TypeError, match="async"):
        mux.handle_func("c", not_async)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pydantic model or Task"):
        mux.handle_func("d", bad_annotation)
    with pytest.raises(TypeError):

        @mux.task("e")
        async def decorated(a: EmailPayload, b: EmailPayload) -> None:
            pass

    assert mux.patterns == []


def test_duplicate_and_empty_patterns_are_rejected() -> None:
    mux = ServeMux()
    mux.handle_func("job", _recorder([], "x"))
    with pytest.raises(ValueError, match="already registered"):
        mux.handle_func("job", _recorder([], "y"))
    with pytest.raises(ValueError):
        mux.handle_func("", _recorder([], "z"))
    with pytest.raises(ValueError):
        mux.handle_func("   ", _recorder([], "z"))


def test_a_local_handler_with_postponed_annotations_of_local_imports_registers() -> None:
    """Under ``from __future__ import annotations``, a handler defined in a function whose annotation
    names a type imported only in that function: ``Task`` resolves (typing.get_type_hints raised
    NameError for it), a model visible only there gets an error that says what to do."""
    source = textwrap.dedent(
        """
        from __future__ import annotations

        def build():
            from asynq_aio import ServeMux, Task

            async def handler(task: Task) -> None:
                return None

            mux = ServeMux()
            mux.handle_func("local", handler)
            return mux

        def build_model():
            from pydantic import BaseModel
            from asynq_aio import ServeMux

            class Hidden(BaseModel):
                x: int

            async def handler(payload: Hidden) -> None:
                return None

            ServeMux().handle_func("hidden", handler)
        """
    )
    module: dict[str, Any] = {"__name__": "local_handlers"}
    exec(compile(source, "local_handlers.py", "exec"), module)
    assert module["build"]().handler_for("local") is not None
    with pytest.raises(TypeError, match="import it at module level"):
        module["build_model"]()
