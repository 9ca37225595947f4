"""Drives the Django side of tests/test_django_backend.py, in the Django venv, while a worker runs.

Enqueues through a view (Django's test client) and through ``Task.enqueue``, waits for each task to
finish through ``get_result``/``refresh``, and prints one JSON object of what it saw. The IDs given
as arguments are tasks the test stored directly (a bad payload, bad arguments): their results are
read back too.
"""

import json
import sys
import time
from datetime import timedelta
from typing import Any

import django
from django.utils import timezone


def main() -> None:
    """Run the scenario and print its JSON report."""
    django.setup()
    from django.tasks import TaskResultStatus, default_task_backend
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.test import Client
    from shop.tasks import add, attempt, explode, greet, later

    out: dict[str, Any] = {}
    web = Client()
    response = web.get("/add/", {"a": 2, "b": 3})
    out["view_status"] = response.status_code
    view_id = response.json()["id"]
    out["view_enqueue_status"] = response.json()["status"]

    started = {
        "add": add.get_result(view_id),
        "greet": greet.enqueue("ada", punctuation="?"),
        "explode": explode.enqueue("on purpose"),
        "attempt": attempt.enqueue(),
    }
    waiting = later.using(run_after=timezone.now() + timedelta(hours=1)).enqueue()
    try:
        add.using(priority=5)
    except InvalidTask as exc:
        out["priority_refused"] = str(exc)
    try:
        default_task_backend.get_result("no-such-task")
    except TaskResultDoesNotExist:
        out["unknown_id"] = "TaskResultDoesNotExist"

    deadline = time.monotonic() + 30
    for result in started.values():
        while not result.is_finished and time.monotonic() < deadline:
            time.sleep(0.1)
            result.refresh()
    for name, result in started.items():
        entry: dict[str, Any] = {"status": str(result.status), "attempts": result.attempts}
        if result.status == TaskResultStatus.SUCCESSFUL:
            entry["return_value"] = result.return_value
        entry["errors"] = [
            {
                "class": e.exception_class_path,
                "name": e.exception_class.__name__,
                "traceback": e.traceback,
            }
            for e in result.errors
        ]
        entry["args"], entry["kwargs"] = result.args, result.kwargs
        entry["queue_name"] = result.task.queue_name
        entry["id"] = result.id
        out[name] = entry
    out["view_result"] = web.get(f"/result/{view_id}/").json()
    out["later"] = str(default_task_backend.get_result(waiting.id).status)
    out["stored_directly"] = {}
    for task_id in sys.argv[1:]:
        try:
            found = default_task_backend.get_result(task_id)
        except TaskResultDoesNotExist as exc:  # its function cannot be imported: no Task to report
            out["stored_directly"][task_id] = {"status": "DoesNotExist", "message": str(exc)}
            continue
        out["stored_directly"][task_id] = {
            "status": str(found.status),
            "errors": [e.exception_class_path for e in found.errors],
            "traceback": found.errors[0].traceback if found.errors else "",
        }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
