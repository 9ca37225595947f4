"""Django 6 Tasks on asynq-aio, end to end, on a single Redis and on the cluster: the real Django
project in tests/django_project enqueues through its TASKS backend (from a view, via Django's test
client, and from ``Task.enqueue``), a real worker (``python -m asynq_aio.contrib.django``) runs the
functions, and ``get_result`` reads states, return values and errors back from Redis. Tasks that
cannot run (an unknown function path, a bad payload, arguments the function does not take) must end
archived with an error that says why, not be retried.

Django 6 needs Python >= 3.12, so this runs in a venv of its own (tests/djangoenv.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from djangoenv import django_python
from workerproc import conn_opt

from asynq_aio import Client, Inspector, Task, TaskState

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

PROJECT = Path(__file__).resolve().parent / "django_project"


def redis_url(target: RedisTarget) -> str:
    if target.kind == "single":
        assert target.url is not None
        return target.url
    assert target.addrs is not None
    return "redis-cluster://" + ",".join(target.addrs)


def project_env(target: RedisTarget, queue: str, out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(
        DJANGO_SETTINGS_MODULE="djproject.settings",
        PYTHONPATH=str(PROJECT),
        ASYNQ_TEST_REDIS_URL=redis_url(target),
        ASYNQ_TEST_QUEUE=queue,
        ASYNQ_TEST_OUT=str(out),
    )
    return env


@pytest.fixture(scope="module")
def django_py() -> Path:
    return django_python()


async def test_django_tasks_run_on_an_asynq_worker(
    django_py: Path, redis_target: RedisTarget, unique_queue: str, tmp_path: Path
) -> None:
    env = project_env(redis_target, unique_queue, tmp_path)
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    bad = {
        "unknown path": Task("django:shop.tasks.nope", {"args": [], "kwargs": {}}),
        "not a task": Task("django:shop.tasks.NOT_A_TASK", {"args": [], "kwargs": {}}),
        "bad payload": Task("django:shop.tasks.add", b"not json"),
        "bad args": Task("django:shop.tasks.add", {"args": [1], "kwargs": {"c": 2}}),
    }
    async with Client(opt) as client:
        ids = {
            name: (await client.enqueue(t, queue=unique_queue, retention=600)).id for name, t in bad.items()
        }

    log_path = tmp_path / "worker.log"
    log_file = log_path.open("w")  # a file, not a pipe: a pipe nobody reads can fill and stall the worker
    worker = subprocess.Popen(
        [str(django_py), "-m", "asynq_aio.contrib.django", "--concurrency", "4"],
        cwd=PROJECT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        scenario = await anyio.run_process(
            [str(django_py), "scenario.py", *ids.values()], cwd=PROJECT, env=env, check=False
        )
        assert scenario.returncode == 0, scenario.stderr.decode()[-4000:]
        out: dict[str, Any] = json.loads(scenario.stdout)

        async with Inspector(opt) as insp:
            infos = {name: await insp.get_task_info(unique_queue, tid) for name, tid in ids.items()}
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log_file.close()
    assert worker.returncode == 0, log_path.read_text()[-4000:]

    # enqueued from a sync view, run by the worker: side effect, status and return value
    assert out["view_status"] == 200 and out["view_enqueue_status"] == "READY"
    assert (tmp_path / "add-2-3").read_text() == "5"
    assert out["add"]["status"] == "SUCCESSFUL" and out["add"]["return_value"] == 5
    assert out["add"]["args"] == [2, 3] and out["add"]["attempts"] == 1
    assert out["view_result"]["status"] == "SUCCESSFUL"
    # a coroutine task on another Django queue (mapped to another Asynq queue), kwargs passed
    assert out["greet"]["return_value"] == {"greeting": "hello ada?"}
    assert out["greet"]["queue_name"] == "slow" and out["greet"]["kwargs"] == {"punctuation": "?"}
    # takes_context: Django's TaskContext, with this attempt counted and the task's own ID
    assert out["attempt"]["return_value"] == {"attempt": 1, "id": out["attempt"]["id"]}
    # a task that raised: FAILED, with its exception class and traceback
    failed = out["explode"]
    assert failed["status"] == "FAILED"
    assert (
        failed["errors"][0]["class"] == "builtins.ValueError"
        and failed["errors"][0]["name"] == "ValueError"  # TaskError.exception_class imports it
    )
    assert "exploded: on purpose" in failed["errors"][0]["traceback"]
    assert 'shop/tasks.py", line' in failed["errors"][0]["traceback"]
    # run_after maps to process_at: an hour ahead, it still waits
    assert out["later"] == "READY"
    # what the contract says to refuse or report
    assert "does not support setting priority" in out["priority_refused"]
    assert out["unknown_id"] == "TaskResultDoesNotExist"

    # what cannot run is archived at once (one attempt, no retries left behind) with a clear error
    expected = {
        "unknown path": "cannot import the Django task 'shop.tasks.nope'",
        "not a task": "'shop.tasks.NOT_A_TASK' is a str, not a Django @task",
        "bad payload": "the payload of 'shop.tasks.add' is not",
        "bad args": "'shop.tasks.add' does not take these arguments",
    }
    for name, info in infos.items():
        assert info.state is TaskState.ARCHIVED, (name, info)
        assert info.retried == 0, name
        assert expected[name] in info.last_err, (name, info.last_err)
        seen = out["stored_directly"][ids[name]]
        if name in ("unknown path", "not a task"):  # get_result has no Django Task to report it with
            assert seen["status"] == "DoesNotExist" and "shop.tasks." in seen["message"]
        else:
            assert seen["status"] == "FAILED"
            assert seen["errors"] == ["asynq_aio.contrib.django.TaskNotRunnable"], name


def test_the_backend_needs_django_and_says_so() -> None:
    """In a Python without Django (the main venv), importing the backend fails with the fix."""
    proc = subprocess.run(
        [sys.executable, "-c", "import asynq_aio.contrib.django"], capture_output=True, text=True, timeout=60
    )
    try:
        import django  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        assert proc.returncode != 0
        assert "pip install 'asynq-aio[django]'" in proc.stderr
    else:
        pytest.skip("Django is installed in this venv")


async def test_bad_options_and_bad_backend_use_are_clear_errors(django_py: Path, tmp_path: Path) -> None:
    """Misconfiguration fails at first use of the backend and names the problem."""
    script = """
import django, json
from django.conf import settings
settings.configure(
    USE_TZ=True,
    TASKS={
        "typo": {"BACKEND": "asynq_aio.contrib.django.AsynqBackend",
                 "OPTIONS": {"url": "redis://127.0.0.1:1/0", "retentoin": 5}},
        "nourl": {"BACKEND": "asynq_aio.contrib.django.AsynqBackend", "OPTIONS": {}},
        "dummy": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"},
    },
)
django.setup()
from django.tasks import task_backends
from asynq_aio.contrib.django import worker_app
out = {}
for alias in ("typo", "nourl"):
    try:
        task_backends[alias]
    except Exception as exc:
        out[alias] = f"{type(exc).__name__}: {exc}"
try:
    worker_app("dummy")
except Exception as exc:
    out["dummy"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""
    started = time.monotonic()
    proc = await anyio.run_process([str(django_py), "-c", script], cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert (
        out["typo"].startswith("InvalidTask: TASKS['typo']['OPTIONS'] is invalid")
        and "retentoin" in out["typo"]
    )
    assert "url" in out["nourl"] and "Field required" in out["nourl"]
    assert out["dummy"] == "InvalidTask: TASKS['dummy'] is a DummyBackend, not asynq_aio's AsynqBackend"
    assert time.monotonic() - started < 120
