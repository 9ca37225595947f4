"""The flat public API: ``asynq_aio.__all__`` names exactly what the package exports."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import asynq_aio


def test_all_matches_the_exported_names() -> None:
    exported = {
        name
        for name, value in vars(asynq_aio).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(asynq_aio.__all__) == exported
    assert sorted(asynq_aio.__all__) == list(asynq_aio.__all__)


def test_every_error_is_an_asynq_error() -> None:
    errors = [
        getattr(asynq_aio, n) for n in asynq_aio.__all__ if n.endswith(("Error", "Retry", "Task", "Name"))
    ]
    for cls in errors:
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert issubclass(cls, asynq_aio.AsynqError), cls


def test_periodic_task_api_is_exported() -> None:
    """The scheduler types a user needs (to register entries, write hooks, feed a manager)."""
    from asynq_aio import _periodic, _scheduler

    assert asynq_aio.Scheduler is _scheduler.Scheduler
    assert asynq_aio.PeriodicTaskManager is _periodic.PeriodicTaskManager
    for name in ("CronEntry", "EntryOptions", "Fire", "PeriodicTaskConfig", "SyncResult"):
        assert name in asynq_aio.__all__


#: The modules a user imports from; every other top-level module is private (named ``_x``). The
#: ``protocol`` and ``server`` packages are internal too; their names are the project's layout.
PUBLIC_MODULES = {"sync", "testing", "logfmt", "tracing", "metrics", "web", "contrib", "cli"}
INTERNAL_PACKAGES = {"protocol", "server"}


def test_internal_modules_are_private_and_the_public_ones_are_listed() -> None:
    root = Path(asynq_aio.__file__).parent
    modules = {
        p.stem
        for p in root.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert {m for m in modules if not m.startswith("_")} == PUBLIC_MODULES | INTERNAL_PACKAGES


# -- layering: only protocol/ reaches the Redis layer, only redispy.py touches redis-py's internals ---

PACKAGE_ROOT = Path(asynq_aio.__file__).parent
REDIS_LAYER = "asynq_aio.protocol._redis"
REDISPY = PACKAGE_ROOT / "protocol" / "_redis" / "redispy.py"

#: Attributes of redis-py objects that are private or undocumented (slot map state, node manager,
#: pools and raw connections): an honest approximation of "redis-py internals", by name.
REDIS_PY_INTERNALS = frozenset(
    {
        "_initialize",
        "_background_tasks",
        "nodes_manager",
        "move_slot",
        "connection_kwargs",
        "connection_pool",
        "startup_nodes",
        "sentinels",
        "get_connection",
        "acquire_connection",
        "send_packed_command",
        "read_response",
    }
)


def _sources() -> list[tuple[Path, str, ast.Module]]:
    """Every module of the package: its path, dotted name and syntax tree."""
    out = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        if path.name == "asynq_pb2.py":
            continue
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((path, name, ast.parse(path.read_text(), filename=str(path))))
    return out


def imported_modules(name: str, is_package: bool, tree: ast.Module) -> set[str]:
    """The dotted names a module imports (``from a import b`` counts as ``a`` and ``a.b``), relative
    imports resolved against ``name``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def redis_layer_imports(path: Path, name: str, tree: ast.Module) -> list[str]:
    found = imported_modules(name, path.name == "__init__.py", tree)
    return sorted(m for m in found if m == REDIS_LAYER or m.startswith(REDIS_LAYER + "."))


def test_only_the_protocol_package_imports_the_redis_layer() -> None:
    offenders = {
        name: found
        for path, name, tree in _sources()
        if not (name == "asynq_aio.protocol" or name.startswith("asynq_aio.protocol."))
        and (found := redis_layer_imports(path, name, tree))
    }
    assert offenders == {}, "outside asynq_aio/protocol/, go through RedisSession and the stores"


def redis_py_internals_used(tree: ast.Module) -> list[str]:
    """``x.<internal>`` and ``getattr(x, "<internal>", ...)`` for the names above, with line numbers."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in REDIS_PY_INTERNALS:
            found.append(f"{node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in REDIS_PY_INTERNALS
        ):
            found.append(f"{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_only_redispy_touches_redis_py_internals() -> None:
    offenders = {
        str(path.relative_to(PACKAGE_ROOT.parent)): found
        for path, _, tree in _sources()
        if path != REDISPY and (found := redis_py_internals_used(tree))
    }
    assert offenders == {}, "redis-py internals belong in asynq_aio/protocol/_redis/redispy.py"
    # the scan does see them where they are
    assert redis_py_internals_used(ast.parse(REDISPY.read_text()))


def test_the_layering_scans_catch_a_violation() -> None:
    """The two scans above, fed a module that breaks each rule (so they cannot pass vacuously)."""
    bad = ast.parse(
        "from asynq_aio.protocol._redis.transport import Transport\n"
        "from ..protocol._redis import redispy\n"
        "import asynq_aio.protocol._redis.ops\n"
        "from asynq_aio.protocol import _redis\n"
        "def f(client):\n"
        "    client._initialize = True\n"
        "    return getattr(client.nodes_manager, '_background_tasks', ())\n"
    )
    found = redis_layer_imports(PACKAGE_ROOT / "server" / "x.py", "asynq_aio.server.x", bad)
    assert found == [
        "asynq_aio.protocol._redis",
        "asynq_aio.protocol._redis.ops",
        "asynq_aio.protocol._redis.redispy",
        "asynq_aio.protocol._redis.transport",
        "asynq_aio.protocol._redis.transport.Transport",
    ]
    assert len(redis_py_internals_used(bad)) == 3
