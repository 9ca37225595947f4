"""``asynq-aio worker ... --reload``: restart the worker in a child process when source files change.

A development aid, like ``uvicorn --reload``. The supervisor never imports the user's code, so an
edit that breaks the import only makes the child fail; the next save starts it again. It polls file
modification times (twice a second) rather than needing an extra package for file events.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType

__all__ = ["supervise", "watched_dirs"]

log = logging.getLogger("asynq_aio.cli")

POLL_INTERVAL = 0.5
STOP_TIMEOUT = 30.0  # a child that ignores SIGTERM this long is killed
_SKIPPED_DIRS = {"__pycache__", "node_modules", "venv", "site-packages"}


def watched_dirs(spec: str) -> list[Path]:
    """The current directory, plus the directory of the app's module when it lives elsewhere."""
    dirs = [Path.cwd()]
    module_name = spec.partition(":")[0]
    try:
        # a top-level name only: finding a submodule would import (run) its parent packages
        found = importlib.util.find_spec(module_name.partition(".")[0]) if module_name else None
    except (ImportError, ValueError):
        found = None
    if found is not None and found.origin and found.origin not in ("built-in", "frozen"):
        where = Path(found.origin).parent
        if found.submodule_search_locations:  # a package: watch the folder that holds it
            where = where.parent
        if not any(where.is_relative_to(d) for d in dirs):
            dirs.append(where)
    return dirs


def _sources(dirs: Iterable[Path]) -> Iterator[Path]:
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in _SKIPPED_DIRS]
            for name in files:
                if name.endswith(".py"):
                    yield Path(root, name)


def snapshot(dirs: Iterable[Path]) -> dict[Path, float]:
    """Modification time of every watched ``.py`` file."""
    times = {}
    for path in _sources(dirs):
        try:
            times[path] = path.stat().st_mtime
        except OSError:  # removed between the walk and the stat
            continue
    return times


def _changed(before: dict[Path, float], after: dict[Path, float]) -> list[Path]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _stop(child: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if child.poll() is None:
        child.send_signal(sig)
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("the worker did not stop within %.0f s of %s; killing it", STOP_TIMEOUT, sig)
            child.kill()
    return child.wait()


def supervise(args: list[str], dirs: list[Path]) -> int:
    """Run ``asynq-aio <args>`` and restart it on every change under ``dirs`` until SIGINT/SIGTERM;
    return the last child's exit code."""
    stop_signal: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_signal.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    command = [sys.executable, "-m", "asynq_aio.cli", *args]
    log.info("reload: watching %s for changes", ", ".join(str(d) for d in dirs))
    try:
        files = snapshot(dirs)
        child = subprocess.Popen(command)
        reported_exit = False
        while not stop_signal:
            time.sleep(POLL_INTERVAL)
            code = child.poll()
            if code is not None and not reported_exit:
                log.warning("the worker exited with code %d; waiting for a change to restart it", code)
                reported_exit = True
            now = snapshot(dirs)
            changed = _changed(files, now)
            if not changed:
                continue
            files = now
            shown = ", ".join(str(p) for p in changed[:3]) + (" ..." if len(changed) > 3 else "")
            log.info("reload: %s changed; restarting the worker", shown)
            _stop(child)
            child = subprocess.Popen(command)
            reported_exit = False
        return _stop(child, stop_signal[0])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
