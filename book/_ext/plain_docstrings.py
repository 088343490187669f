"""Sphinx extension for the API reference (book/api.md): fsdiag's docstrings are written as plain
text (ASCII formulas, indented equations and commands), not as reStructuredText. Most of them are
valid reStructuredText as they stand and render as such. A docstring that docutils would warn about
(an indented formula without a blank line before it, an unmatched `*`) is shown verbatim, as a
literal block, instead of failing the build (`-W`). The build log lists each one, so it can be
rewritten (a blank line around an indented block, `::` before it)."""
from __future__ import annotations

import docutils.core
import docutils.utils
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _is_clean_rst(text: str, env) -> bool:
    """Whether docutils parses `text` without a warning (Sphinx's own roles count as clean)."""
    settings = {"env": env, "report_level": docutils.utils.Reporter.WARNING_LEVEL, "halt_level": 5,
                "warning_stream": False, "file_insertion_enabled": False, "raw_enabled": False}
    doctree = docutils.core.publish_doctree(text, settings_overrides=settings)
    for msg in doctree.findall(docutils.nodes.system_message):
        if msg["level"] >= docutils.utils.Reporter.WARNING_LEVEL and "Unknown interpreted text role" not in msg.astext():
            return False
    # An undefined |substitution| (a plain-text |x|) leaves a problematic node and no message here:
    # the transform's message goes only to Sphinx's own run, as an error.
    for node in doctree.findall(docutils.nodes.problematic):
        t = node.astext()
        if len(t) > 1 and t[0] == "|" and t[-1] == "|":
            return False
    return True


def _process(app, what, name, obj, options, lines):
    if not lines or not name.startswith("fsdiag") or _is_clean_rst("\n".join(lines), app.env):
        return
    logger.info(f"[plain_docstrings] {name}: not valid reStructuredText, shown verbatim")
    body = ["    " + line if line.strip() else "" for line in lines]
    lines[:] = ["::", "", *body, ""]


def setup(app):
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
