"""Griffe extension for the docs build: read lossfn's reST-flavoured docstrings as Markdown.

lossfn's docstrings are Google style with a few reStructuredText habits that the
Markdown renderer would show raw. When the docs are built (the source is left
as it is) this extension rewrites, in every docstring:

- ``Example:`` headings to ``Examples:``, the section whose ``>>>`` lines Griffe
  renders as code (anything else is Markdown, where ``>>>`` is a block quote);
- ``.. math:: …`` blocks (with their indented continuation lines) to ``\\[ … \\]``
  and ``:math:`…``` to ``\\( … \\)``, which pymdownx.arithmatex hands to MathJax;
- cross-reference roles such as ``:func:`lossfn.mse``` to code spans.
"""

from __future__ import annotations

import re

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|obj|exc):`~?([^`]+)`")
_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_MATH = re.compile(r"^(\s*)\.\. math::\s*(.*)$")


def _display_math(text: str) -> str:
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        match = _MATH.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, first = match.groups()
        body = [first] if first.strip() else []
        i += 1
        # Continuation: the following lines indented deeper than the directive.
        while i < len(lines) and lines[i].strip() and (
                len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        out += ["", f"{indent}\\[", *(f"{indent}{b}" for b in body), f"{indent}\\]", ""]
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """The docstring ``text`` with the rewrites listed in the module docstring."""
    text = _SINGULAR.sub(r"\1Examples:", text)
    text = _INLINE_MATH.sub(r"\\(\1\\)", text)
    text = _ROLE.sub(r"`\1`", text)
    return _display_math(text)


class ExampleSections(griffe.Extension):
    """Apply :func:`to_markdown` to every docstring Griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
