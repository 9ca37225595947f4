"""One virtualenv per benchmarked system, created on first use under ``benchmarks/.venv-<name>/``.

Why separate venvs: the peers pin conflicting versions of redis-py (arq needs redis-py < 6, the
project uses redis-py 8), and installing a peer next to the project would change what the project
itself runs on. Each driver runs as a subprocess of the venv's own interpreter and reports JSON.
asynq-aio gets one too (``.venv-asynq``: the project installed editable with its ``bench`` extra), so
the dev venv is never modified and the chart's matplotlib lives there.

Standard library only (the orchestrator may run under any Python 3.11+).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


@dataclass(frozen=True)
class System:
    name: str  # short name, also the driver module suffix: benchmarks/drv_<name>.py
    label: str  # as printed in the table
    requirements: tuple[str, ...]  # pip arguments
    editable_project: bool = False  # install this repository (editable) with the bench extra


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System("asynq", "asynq-aio", (), editable_project=True),
        System("taskiq", "taskiq-redis", ("taskiq", "taskiq-redis", "uvloop", "hiredis")),
        System("saq", "SAQ", ("saq[hiredis]", "uvloop", "typing_extensions")),
        System("arq", "arq", ("arq", "uvloop", "hiredis")),
        System("streaq", "streaq", ("streaq", "uvloop")),
    )
}


def venv_dir(name: str) -> Path:
    return BENCH / f".venv-{name}"


def python_of(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def _stamp(system: System) -> str:
    spec = repr((system.requirements, system.editable_project))
    if system.editable_project:
        spec += (ROOT / "pyproject.toml").read_text()
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def ensure(system: System, log: Callable[[str], None] = print) -> str | None:
    """Create or refresh the system's venv; returns None when ready, else why it could not be."""
    d = venv_dir(system.name)
    stamp_file = d / ".bench-stamp"
    want = _stamp(system)
    if python_of(system.name).exists() and stamp_file.exists() and stamp_file.read_text() == want:
        return None
    log(f"==> creating {d.relative_to(ROOT)} for {system.label} (first run only)")
    try:
        if not python_of(system.name).exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(d)
        pip = [str(python_of(system.name)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if system.editable_project:
            args = [*pip, "--config-settings", "editable_mode=compat", "-e", f"{ROOT}[bench]"]
        else:
            args = [*pip, *system.requirements]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return "pip install failed: " + " | ".join(tail)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"venv creation failed: {exc}"
    stamp_file.write_text(want)
    return None


def installed_version(name: str, dist: str) -> str:
    """The installed version of ``dist`` in the system's venv ("" when unknown)."""
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        out = subprocess.run(
            [str(python_of(name)), "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


DISTS = {"asynq": "asynq-aio", "taskiq": "taskiq-redis", "saq": "saq", "arq": "arq", "streaq": "streaq"}

if __name__ == "__main__":
    names = sys.argv[1:] or list(SYSTEMS)
    for n in names:
        err = ensure(SYSTEMS[n])
        print(n, "ok" if err is None else err, installed_version(n, DISTS[n]) if err is None else "")
