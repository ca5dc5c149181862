"""argparse help that shows every flag's default (stdlib only: the teacher tool uses it too)."""

from __future__ import annotations

import argparse


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help; descriptions and epilogs keep their line breaks."""


def show_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` and its subcommands' parsers with defaults in their help; returns it."""
    parser.formatter_class = Formatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                show_defaults(sub)
        elif action.option_strings and not action.help:
            if action.default not in (None, argparse.SUPPRESS):
                action.help = " "  # a flag with no words of help still shows its default
    return parser
