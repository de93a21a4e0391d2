"""The post sources `hepta live ingest --source` knows, and how a --source becomes one.

Each source module declares `SOURCE = SourceKind(...)`: its --source form, a few words of help,
the function that opens it and the flags it reads. Adding a source is that module and its line in
`SOURCE_MODULES` (docs/live.md, "Adding a post source"). Every `hepta` command builds the ingest
parser and so imports these modules: they import heavy libraries (httpx) where they use them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hepta.errors import HeptaError
from hepta.live.sources.base import PostSource

SOURCE_MODULES = (
    "hepta.live.sources.replay",
    "hepta.live.sources.x_stream",
    "hepta.live.sources.x_search",
)


@dataclass(frozen=True)
class SourceOption:
    """A flag of `hepta live ingest` that a source reads; sources reading the same flag share one object."""

    flag: str
    help: str
    type: Callable[[str], object] = str
    default: object = None
    metavar: str | None = None
    repeat: bool = False  # the flag may be given again; the source gets the list of values

    def add_to(self, parser: argparse._ActionsContainer) -> None:
        if self.repeat:
            parser.add_argument(self.flag, action="append", default=[], type=self.type, metavar=self.metavar,
                                help=self.help)
        else:
            parser.add_argument(self.flag, default=self.default, type=self.type, metavar=self.metavar, help=self.help)


@dataclass(frozen=True)
class SourceKind:
    form: str  # as --source spells it: "x-stream", or "jsonl:PATH" where a value follows the colon
    help: str  # a few words for `hepta live ingest --help`
    open: Callable[[str, argparse.Namespace], PostSource]  # (the value after the colon, the ingest flags)
    options: tuple[SourceOption, ...] = ()

    @property
    def name(self) -> str:
        return self.form.partition(":")[0]

    @property
    def takes_value(self) -> bool:
        return ":" in self.form


def source_kinds() -> list[SourceKind]:
    kinds = [importlib.import_module(module).SOURCE for module in SOURCE_MODULES]
    assert len({kind.name for kind in kinds}) == len(kinds), "two post sources share one --source name"
    return kinds


def _one_of(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def find_source(spec: str) -> tuple[SourceKind, str]:
    """The source a --source value names, and the value after its colon ("" for a form without one)."""
    kinds = source_kinds()
    name, colon, value = spec.partition(":")
    for kind in kinds:
        if kind.name == name and (bool(value.strip()) if kind.takes_value else not colon):
            return kind, value
    raise HeptaError(f"--source {spec!r} is not a source; use {_one_of([kind.form for kind in kinds])}")


def open_source(spec: str, options: argparse.Namespace) -> PostSource:
    """The source named by --source, ready to read; raises HeptaError on bad input."""
    kind, value = find_source(spec)
    return kind.open(value, options)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--source, with every registered form in its help, and each flag the sources read, once."""
    kinds = source_kinds()
    parser.add_argument("--source", required=True, metavar="SOURCE",
                        help=_one_of([f"{kind.form} ({kind.help})" for kind in kinds]))
    group = parser.add_argument_group("source options")
    added: dict[str, SourceOption] = {}
    for kind in kinds:
        for option in kind.options:
            if option.flag not in added:
                option.add_to(group)
                added[option.flag] = option
            assert added[option.flag] == option, f"two post sources declare {option.flag} differently"
