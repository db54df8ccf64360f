"""mkdocs hook: escape ``][`` in generated table rows that are not cross-references.

The CLI reference is written by mkdocs-click from the help texts, which use the usual
``PATH[,PATH...][@WEIGHT]`` notation; Markdown reads ``[...][@WEIGHT]`` as a reference link and
mkdocs-autorefs then fails the strict build on it. This preprocessor runs after mkdocs-click's and
escapes the bracket in table rows when what follows is not a Python identifier path.
"""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor

_NOT_A_REF = re.compile(r"\]\[(?![A-Za-z_][\w.]*\])")


class _EscapeBrackets(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        return [_NOT_A_REF.sub(r"]\\[", line) if line.lstrip().startswith("|") else line for line in lines]


class _EscapeBracketsExtension(Extension):
    def extendMarkdown(self, md) -> None:  # noqa: N802 (Markdown's API)
        md.preprocessors.register(_EscapeBrackets(md), "geo_ppp_escape_brackets", 140)


def on_config(config, **kwargs):
    """Add the preprocessor to the page's Markdown extensions."""
    config.markdown_extensions.append(_EscapeBracketsExtension())
    return config
