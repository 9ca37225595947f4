"""One virtualenv per benchmarked system, created on first use under ``benchmarks/.venv-<name>/``.

Why separate venvs: the peers pin conflicting versions of redis-py (arq needs redis-py < 6, the
project uses redis-py 8), and installing a peer next to the project would change what the project
itself runs on. Each driver runs as a subprocess of the venv's own interpreter and reports JSON.
asynq-aio gets one too (``.venv-asynq``: the project installed editable with its ``bench`` extra), so
the dev venv is never modified and the chart's matplotlib lives there.

Go Asynq (system ``go``) is the exception: its "environment" is one binary, built from the Go module
in ``benchmarks/go/`` with the local Go toolchain, its dependencies fetched through the Go module
proxy by ``go build`` itself. It lives in ``benchmarks/.venv-go/bin/`` (gitignored like the venvs)
and is rebuilt only when the module's files or the toolchain change.

Standard library only (the orchestrator may run under any Python 3.11+).
"""

from __future__ import annotations

import hashlib
import os
import shutil
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
    go: bool = False  # a Go program built from benchmarks/go/, not a Python venv


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System("asynq", "asynq-aio", (), editable_project=True),
        System("taskiq", "taskiq-redis", ("taskiq", "taskiq-redis", "uvloop", "hiredis")),
        System("saq", "SAQ", ("saq[hiredis]", "uvloop", "typing_extensions")),
        System("arq", "arq", ("arq", "uvloop", "hiredis")),
        System("streaq", "streaq", ("streaq", "uvloop")),
        System("go", "Go Asynq", (), go=True),
    )
}

GO_MODULE = BENCH / "go"
GO_SOURCES = ("go.mod", "go.sum", "main.go")
# Where a Go toolchain is looked for when `go` is not on PATH (the official tarball's location).
GO_FALLBACK = Path("/usr/local/go/bin/go")


def venv_dir(name: str) -> Path:
    return BENCH / f".venv-{name}"


def python_of(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def go_binary() -> Path:
    """The Go driver, built by :func:`ensure` (``benchmarks/.venv-go`` is gitignored)."""
    return venv_dir("go") / "bin" / "asynq-bench"


def driver_command(system: str, role: str, args: list[str]) -> list[str]:
    """The argv of one driver process: ``python -m benchmarks.drv_<system>`` or the Go binary.

    One place for this, so the runner starts every system the same way and reads the same lines.
    """
    if SYSTEMS[system].go:
        return [str(go_binary()), role, *args]
    # -P: `python -m` would put the working directory (this checkout) before PYTHONPATH, so a
    # baseline tree or BENCH_ASYNQ_SRC given there would be shadowed by the checkout's asynq_aio
    return [str(python_of(system)), "-P", "-m", f"benchmarks.drv_{system}", role, *args]


def find_go() -> str | None:
    """The ``go`` command: from PATH, else the official tarball's /usr/local/go; None if neither."""
    found = shutil.which("go")
    if found:
        return found
    if os.access(GO_FALLBACK, os.X_OK):
        return str(GO_FALLBACK)
    return None


def _go_env() -> dict[str, str]:
    """``go`` without toolchain downloads: the local Go builds it, or the build fails and says so."""
    return {**os.environ, "GOTOOLCHAIN": "local"}


def _ensure_go(system: System, log: Callable[[str], None]) -> str | None:
    """Build the Go driver once per change of its sources or of the toolchain.

    Dependencies come from the Go module proxy (``go build`` downloads what go.sum pins); the build
    never edits go.mod (``-mod=readonly``). Any failure is returned as text, so the runner reports
    the system as not available and prints no Go figure.
    """
    go = find_go()
    if go is None:
        return f"no Go toolchain (`go` is not on PATH and {GO_FALLBACK} does not exist)"
    try:
        ver = subprocess.run(
            [go, "version"], capture_output=True, text=True, timeout=60, check=True, env=_go_env()
        ).stdout.strip()
        h = hashlib.sha256(ver.encode())
        for name in GO_SOURCES:
            h.update((GO_MODULE / name).read_bytes())
        want = h.hexdigest()[:16]
        stamp_file = venv_dir(system.name) / ".bench-stamp"
        binary = go_binary()
        if binary.exists() and stamp_file.exists() and stamp_file.read_text() == want:
            return None
        log(f"==> building {binary.relative_to(ROOT)} for {system.label} with {ver}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
        proc = subprocess.run(
            [go, "build", "-mod=readonly", "-trimpath", "-o", str(tmp), "."],
            cwd=GO_MODULE,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env=_go_env(),
        )
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return "go build failed: " + " | ".join(tail)
        tmp.replace(binary)  # atomic: a concurrent run never starts a half-written binary
        stamp_file.write_text(want)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"go build failed: {exc}"
    return None


def _stamp(system: System) -> str:
    spec = repr((system.requirements, system.editable_project))
    if system.editable_project:
        spec += (ROOT / "pyproject.toml").read_text()
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def ensure(system: System, log: Callable[[str], None] = print) -> str | None:
    """Create or refresh the system's venv; returns None when ready, else why it could not be."""
    if system.go:
        return _ensure_go(system, log)
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
    """The installed version of ``dist`` in the system's venv ("" when unknown).

    For Go, the versions linked into the built binary (its ``version`` role reads its build info),
    so the results name what actually ran, not what go.mod asks for.
    """
    if SYSTEMS[name].go:
        try:
            out = subprocess.run(
                [str(go_binary()), "version"], capture_output=True, text=True, timeout=60, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        out = subprocess.run(
            [str(python_of(name)), "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


DISTS = {
    "asynq": "asynq-aio",
    "taskiq": "taskiq-redis",
    "saq": "saq",
    "arq": "arq",
    "streaq": "streaq",
    "go": "github.com/hibiken/asynq",
}

if __name__ == "__main__":
    names = sys.argv[1:] or list(SYSTEMS)
    for n in names:
        err = ensure(SYSTEMS[n])
        print(n, "ok" if err is None else err, installed_version(n, DISTS[n]) if err is None else "")
