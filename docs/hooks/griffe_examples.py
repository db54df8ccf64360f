"""A griffe extension for the API pages: ``Example:`` sections with doctest lines read as ``Examples:``.

A Google ``Example:`` section holding ``>>>`` lines is read as an ``Examples:`` section, so its
doctest lines render as code instead of nested quotes.

The docstrings stay as they are (ruff's Google convention accepts both spellings).
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleAsExamples(griffe.Extension):
    """Rename ``Example:`` to ``Examples:`` in docstrings that hold doctest lines."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: D102
        doc = obj.docstring
        if doc is not None and ">>>" in doc.value and _EXAMPLE.search(doc.value):
            doc.value = _EXAMPLE.sub(r"\1Examples:", doc.value)
