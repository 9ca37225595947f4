"""A venv with Django 6 and this checkout, for tests that need Django's Tasks framework.

Django 6 needs Python >= 3.12, and the main venv runs 3.11, so the Django tests run their project
in a venv of their own under ``.venv-django/<key>/``, built once and reused: the key hashes the
Python version and the exact versions installed (Django pinned to :data:`DJANGO_VERSION`, the rest
as ``uv.lock`` pins them), so a dependency bump builds a new venv instead of reusing a stale one.
This checkout is installed editable, so code changes need no rebuild.

Without a Python >= 3.12 the tests are skipped with the reason, unless ``ASYNQ_AIO_REQUIRE_DJANGO=1``
(CI sets it): then they fail.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venv-django"
DJANGO_VERSION = "6.1.3"
_BUILD_TIMEOUT = 600


def _unavailable(reason: str) -> None:
    """Skip, or fail when CI requires the Django tests to run."""
    if os.environ.get("ASYNQ_AIO_REQUIRE_DJANGO") == "1":
        pytest.fail(f"ASYNQ_AIO_REQUIRE_DJANGO=1 but {reason}")
    pytest.skip(reason)


def _version(python: str) -> tuple[int, int] | None:
    try:
        proc = subprocess.run(
            [python, "-c", "import sys, venv; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    major, minor = proc.stdout.split()
    return int(major), int(minor)


def find_python() -> tuple[str, tuple[int, int]] | None:
    """A Python >= 3.12 with venv: $ASYNQ_AIO_DJANGO_PYTHON, then python3.13 / python3.12 on
    PATH, then pyenv's installs."""
    candidates = [os.environ.get("ASYNQ_AIO_DJANGO_PYTHON", "")]
    candidates += [shutil.which(name) or "" for name in ("python3.13", "python3.12")]
    candidates += sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python")), reverse=True
    )
    for python in filter(None, candidates):
        version = _version(python)
        if version is not None and version >= (3, 12):
            return python, version
    return None


def _requirements() -> str:
    """The pinned requirements: uv.lock's, with Django at DJANGO_VERSION."""
    uv = shutil.which("uv")
    if uv is not None:
        proc = subprocess.run(
            [
                uv,
                "export",
                "--frozen",
                "--no-dev",
                "--extra",
                "django",
                "--no-emit-project",
                "--no-hashes",
                "-q",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0 and f"django=={DJANGO_VERSION}" in proc.stdout:
            return proc.stdout
    return f"django=={DJANGO_VERSION}\n"  # without uv: Django pinned, the rest from pyproject's ranges


def _run(cmd: list[str], **kwargs: object) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        _unavailable(f"building the Django venv failed: {' '.join(cmd)}\n{tail}")


def django_python() -> Path:
    """The Python of the Django venv, built on first use (skips or fails when it cannot be)."""
    found = find_python()
    if found is None:
        _unavailable("no Python >= 3.12 found (Django 6 needs it): set ASYNQ_AIO_DJANGO_PYTHON")
        raise AssertionError("unreachable")
    python, version = found
    requirements = _requirements()
    key = hashlib.sha256(f"{version}\n{requirements}".encode()).hexdigest()[:12]
    venv = VENVS / f"py{version[0]}{version[1]}-{key}"
    py = venv / "bin" / "python"
    done = venv / ".complete"
    VENVS.mkdir(exist_ok=True)
    with (VENVS / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time across pytest sessions
        if done.exists():
            return py
        shutil.rmtree(venv, ignore_errors=True)
        req_file = VENVS / f"{venv.name}.txt"
        req_file.write_text(requirements, encoding="utf-8")
        uv = shutil.which("uv")
        if uv is not None:
            env = {**os.environ, "VIRTUAL_ENV": str(venv)}
            _run([uv, "venv", "-q", "--python", python, str(venv)])
            _run([uv, "pip", "install", "-q", "-r", str(req_file)], env=env)
            _run([uv, "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], env=env)
        else:
            _run([python, "-m", "venv", str(venv)])
            _run([str(py), "-m", "pip", "install", "-q", "-r", str(req_file)])
            _run([str(py), "-m", "pip", "install", "-q", "-e", str(ROOT)])
        done.write_text(requirements, encoding="utf-8")
    return py
