"""A griffe extension for the API reference: render Sphinx roles in docstrings as inline code.

Several docstrings say ``:meth:`enqueue``` or ``:class:`Task```, which Markdown would print with
the role prefix. Rewriting them here keeps the docstrings as they are (readable in an editor and
in ``help()``) and the reference pages clean. Loaded by mkdocs.yml's mkdocstrings options.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|attr|data|mod|exc|obj|const):`~?([^`]+)`")


def strip_roles(text: str) -> str:
    """``:meth:`Client.enqueue``` -> ```Client.enqueue```; ``~a.b.C`` keeps only ``C``, as Sphinx shows it."""

    def repl(m: re.Match[str]) -> str:
        target = m.group(1)
        shown = target.rsplit(".", 1)[-1] if m.group(0).find(":`~") >= 0 else target
        return f"`{shown}`"

    return _ROLE.sub(repl, text)


class SphinxRoles(griffe.Extension):
    """Rewrite each object's docstring once, when griffe creates the object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = strip_roles(obj.docstring.value)
