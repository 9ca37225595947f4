"""The one ``async with`` shape of the objects that hold connections (Client, Inspector, the queue
metrics exporter): entering returns the object, leaving closes it with its ``aclose``."""

from __future__ import annotations

from typing import Self


class AsyncClosing:
    """``async with obj:`` closes ``obj`` on the way out, whatever happened inside; ``aclose`` says
    what closing means for each subclass."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release what this object holds; idempotent."""
        raise NotImplementedError
