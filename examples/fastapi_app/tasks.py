"""The example's task: a welcome email, sent by a handler that runs in the app's worker.

The "email" is not really sent; the handler returns what it would send, which becomes the task's
result, so the app's routes (and the tests) can show that the handler ran.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field

from asynq_aio import ServeMux

log = logging.getLogger(__name__)

WELCOME = "email:welcome"


class WelcomeEmail(BaseModel):
    user_id: int
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


mux = ServeMux()


@mux.task(WELCOME)
async def send_welcome(payload: WelcomeEmail) -> str:
    # Logged inside the handler: with asynq_aio.logfmt.TaskContextFilter on the log handler this
    # record also carries task_id, task_type and queue.
    log.info("sending welcome email to user %d", payload.user_id)
    return f"welcome email sent to {payload.email}"  # the task's result
