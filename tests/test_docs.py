"""The docs site stays whole: every page is in mkdocs.yml's nav, every public name has a reference
entry, and links from the README into docs/ resolve.

`mkdocs build --strict` (run by `make test` and `make docs`) catches broken links and anchors
between pages; it only reports a page missing from nav as INFO, so that a page added by someone
else does not break the build. This test is what makes such a page fail instead, by name.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml  # type: ignore[import-untyped]

import asynq_aio
from asynq_aio import Config, ServeMux, Server, parse_redis_url
from asynq_aio._devcluster import find_free_port_base

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _load_mkdocs_yml() -> dict[str, Any]:
    """mkdocs.yml with its `!!python/name:` tags read as None (safe_load refuses them)."""
    loader: Any = type("MkdocsLoader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda _loader, _suffix, _node: None)
    with (ROOT / "mkdocs.yml").open(encoding="utf-8") as f:
        config: dict[str, Any] = yaml.load(f, Loader=loader)
    return config


def _nav_pages(node: Any) -> list[str]:
    """Every page path in a nav tree: entries are "page.md", {"Title": "page.md"} or {"Title": [...]}."""
    if isinstance(node, str):
        return [] if "://" in node else [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {node!r}")


def _doc_pages() -> set[str]:
    return {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}


def test_every_docs_page_is_in_the_nav() -> None:
    nav = _nav_pages(_load_mkdocs_yml()["nav"])
    missing = sorted(_doc_pages() - set(nav))
    assert not missing, f"add these pages to the nav in mkdocs.yml: {missing}"


def test_every_nav_entry_is_a_page_that_exists() -> None:
    nav = _nav_pages(_load_mkdocs_yml()["nav"])
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"
    gone = sorted(set(nav) - _doc_pages())
    assert not gone, f"the nav names pages that do not exist: {gone}"


def test_the_site_builds_offline_with_no_network_plugins() -> None:
    """Plugins that fetch at build time (social cards, privacy) would make CI depend on the network."""
    config = _load_mkdocs_yml()
    names = [p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]]
    assert set(names) <= {"search", "mkdocstrings"}, names
    assert config["strict"] is True


def test_every_public_name_has_an_api_reference_entry() -> None:
    directives = set()
    for page in (DOCS / "reference").glob("*.md"):
        directives |= set(re.findall(r"^::: asynq_aio\.(\w+)\s*$", page.read_text("utf-8"), re.M))
    missing = sorted(set(asynq_aio.__all__) - directives)
    assert not missing, f"add these to a page in docs/reference/: {missing}"


def _relative_md_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link.split("#", 1)[0] for link in links if "://" not in link and not link.startswith("#")]


def test_readme_links_into_docs_resolve() -> None:
    """GitHub renders README.md and docs/*.md with relative links: they must point at real files."""
    links = _relative_md_links((ROOT / "README.md").read_text("utf-8"))
    assert any(link.startswith("docs/") for link in links)
    broken = [link for link in links if not (ROOT / link).exists()]
    assert not broken, f"README.md links to missing files: {broken}"


def test_docs_pages_do_not_link_outside_the_site() -> None:
    """A link to ../README.md or ../examples/x.py works on GitHub but 404s on the built site (mkdocs
    --strict rejects it): name repository files in code spans instead."""
    offenders = [
        f"{page.relative_to(DOCS)}: {link}"
        for page in DOCS.rglob("*.md")
        for link in _relative_md_links(page.read_text("utf-8"))
        if not (page.parent / link).resolve().is_relative_to(DOCS)
    ]
    assert not offenders, offenders


def test_sphinx_roles_in_docstrings_render_as_code() -> None:
    spec = importlib.util.spec_from_file_location("_griffe_roles", DOCS / "reference" / "_griffe_roles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    strip = module.strip_roles
    assert strip("see :meth:`enqueue` and :class:`~asynq_aio._task.Task`") == "see `enqueue` and `Task`"
    assert strip(":py:func:`asynq_aio.current_task`") == "`asynq_aio.current_task`"
    assert strip("plain ``code`` stays") == "plain ``code`` stays"


# -- docs/deployment.md: the files and settings it shows are the ones in the repository -----------


def _fenced_blocks(page: str, lang: str) -> list[str]:
    """The bodies of the page's ```lang blocks, de-indented when nested in a list item."""
    text = (DOCS / page).read_text("utf-8")
    blocks = re.findall(rf"^( *)```{lang}\n(.*?)^\1```$", text, re.M | re.S)
    return ["".join(line[len(indent) :] for line in body.splitlines(True)) for indent, body in blocks]


def _shutdown_timeout(args: str) -> float:
    found = re.findall(r"--shutdown-timeout[ =\"',]+(\d+(?:\.\d+)?)", args)
    assert len(found) == 1, f"expected one --shutdown-timeout in {args!r}"
    return float(found[0])


def test_deployment_page_shows_the_dockerfile_and_liveness_script_as_they_are() -> None:
    assert _fenced_blocks("deployment.md", "dockerfile") == [
        (ROOT / "examples/docker/Dockerfile").read_text("utf-8")
    ]
    liveness = (ROOT / "examples/docker/liveness.sh").read_text("utf-8")
    assert liveness in _fenced_blocks("deployment.md", "sh")


def test_every_grace_period_outlasts_its_shutdown_timeout() -> None:
    """A grace period shorter than shutdown_timeout + a margin turns every stop into a SIGKILL."""
    margin = 10.0
    dockerfile = (ROOT / "examples/docker/Dockerfile").read_text("utf-8")
    image_timeout = _shutdown_timeout(dockerfile)

    (unit,) = _fenced_blocks("deployment.md", "ini")
    stop = float(re.findall(r"^TimeoutStopSec=(\d+)$", unit, re.M)[0])
    exec_start = re.findall(r"^ExecStart=(.*)$", unit, re.M)[0]
    assert stop >= _shutdown_timeout(exec_start) + margin

    docs = [yaml.safe_load(block) for block in _fenced_blocks("deployment.md", "yaml")]
    compose = next(d for d in docs if "services" in d)["services"]["worker"]
    assert compose["build"]["dockerfile"] == "examples/docker/Dockerfile"
    assert float(compose["stop_grace_period"].removesuffix("s")) >= image_timeout + margin

    deployment = next(d for d in docs if d.get("kind") == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] >= _shutdown_timeout(" ".join(container["args"])) + margin
    assert container["livenessProbe"]["exec"]["command"][-1] == "/app/examples/docker/liveness.sh"
    assert (
        deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    )

    # the page's table says the same
    text = (DOCS / "deployment.md").read_text("utf-8")
    assert f"| `TimeoutStopSec=` | 90 s | {stop:.0f} s |" in text
    assert f"| `terminationGracePeriodSeconds:` | 30 s | {pod['terminationGracePeriodSeconds']} s |" in text


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    (unit,) = _fenced_blocks("deployment.md", "ini")
    worker = Path(sys.executable).parent / "asynq-aio"
    unit = unit.replace("/srv/myapp/.venv/bin/asynq-aio", str(worker)).replace("/srv/myapp", str(tmp_path))
    unit = unit.replace("EnvironmentFile=", "EnvironmentFile=-")  # the env file does not exist here
    path = tmp_path / "asynq-worker@.service"
    path.write_text(unit, "utf-8")
    proc = subprocess.run(
        [analyze, "verify", f"{path.parent}/asynq-worker@1.service"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    # Unknown keys and bad values are reported on stderr without failing the exit status.
    problems = [line for line in proc.stderr.splitlines() if "asynq-worker@" in line]
    assert proc.returncode == 0 and not problems, proc.stderr


@pytest.mark.slow
@pytest.mark.anyio
async def test_liveness_script_fails_only_when_this_hosts_server_is_gone(
    single_redis_url: str, unique_queue: str
) -> None:
    script = str(ROOT / "examples/docker/liveness.sh")
    bin_dir = str(Path(sys.executable).parent)
    base_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    base_env.pop("ASYNQ_CLUSTER_ADDRS", None)
    host = f"pod-{uuid.uuid4().hex[:8]}"

    async def probe(hostname: str, url: str) -> int:
        env = {**base_env, "HOSTNAME": hostname, "ASYNQ_REDIS_URL": url}
        proc = await anyio.run_process(["sh", script], env=env, check=False)
        return proc.returncode

    cases = {
        "this host's server is live": (host, single_redis_url, 0),
        "no server for this host": (f"gone-{uuid.uuid4().hex[:8]}", single_redis_url, 1),
        # a restart would not help while Redis is down, so the probe passes (after the CLI's 5 s retry)
        "Redis unreachable": (host, f"redis://127.0.0.1:{find_free_port_base(1)}/0", 0),
    }
    got: dict[str, int] = {}

    async def run_case(name: str) -> None:
        hostname, url, _ = cases[name]
        got[name] = await probe(hostname, url)

    server = Server(parse_redis_url(single_redis_url), Config(queues={unique_queue: 1}, host=host))
    async with server.serve(ServeMux()), anyio.create_task_group() as tg:
        for name in cases:
            tg.start_soon(run_case, name)
    assert got == {name: expected for name, (_, _, expected) in cases.items()}
