"""Griffe extension for the docs build: read a docstring's ``Example:`` as ``Examples:``.

lossfn's docstrings head their doctests ``Example:`` (singular). Griffe's Google
parser knows only ``Examples:`` as the section whose ``>>>`` lines become code;
anything else is an admonition rendered as Markdown, where ``>>>`` means a
nested block quote. Renaming the heading when the docs are built keeps the
source as it is and renders the examples as code.
"""

from __future__ import annotations

import re

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section headings to ``Examples:`` in every docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
