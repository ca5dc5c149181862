"""Rationale selection: accuracy filter, near-duplicate removal, MoRSD difficulty ranking."""

from scicot_jax.selection.morsd import Decision, Selection, SelectionConfig, select
from scicot_jax.selection.report import render_markdown, write_report
from scicot_jax.selection.similarity import char_cosine, jaccard

__all__ = [
    "Decision",
    "Selection",
    "SelectionConfig",
    "select",
    "render_markdown",
    "write_report",
    "char_cosine",
    "jaccard",
]
