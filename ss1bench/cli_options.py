"""Parsers of comma-separated command-line lists, shared by the CLI commands.

A leaf module (click only). Each parser raises ``click.BadParameter`` naming the option, so a bad
value is a usage error (exit 2) in every command.
"""

from __future__ import annotations

import click


def split_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [part.strip() for part in text.split(",") if part.strip()]


def choices(option: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    """Items of ``text``, each one of ``allowed`` (at least one), in the order given."""
    values = split_list(text)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise click.BadParameter(f"{', '.join(bad) or 'nothing given'}; choose from {', '.join(allowed)}",
                                 param_hint=option)
    return values


def positive_ints(option: str, text: str) -> list[int]:
    """Items of ``text`` as positive integers (at least one), in the order given."""
    try:
        values = [int(v) for v in split_list(text)]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint=option) from None
    if not values or min(values) <= 0:
        raise click.BadParameter(f"{text!r}: give positive integers", param_hint=option)
    return values
