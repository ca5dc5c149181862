"""argparse for every CLI: help that shows each flag's default, usage errors as one line (stdlib
only: the teacher tool and the review app use it too)."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


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
