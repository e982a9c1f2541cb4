"""`zsseg configs`, `zsseg vocabularies`, `zsseg datasets` (its parser is in `datasets`): what zsseg has built in."""

from __future__ import annotations

import argparse

from ..data.vocabulary import PRESETS, Vocabulary
from .outputs import output


def add_parser(commands) -> None:
    commands.add_parser("configs", help="list the built-in recipes of `zsseg train proposals`, `zsseg train fcn` and `zsseg train prompts`").set_defaults(run=configs)
    commands.add_parser("vocabularies", help="list the built-in vocabularies").set_defaults(run=vocabularies)


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as lines whose columns line up, each as wide as its widest cell (the last
    column, free text, unpadded)."""
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]) - 1)] if rows else []
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]) for row in rows]


def vocabularies(args: argparse.Namespace) -> int:
    output(aligned([(name, f"{len(Vocabulary.preset(name))} classes", description) for name, description in PRESETS.items()]))
    return 0


def datasets(args: argparse.Namespace) -> int:
    from ..data.datasets import DATASETS

    output(aligned([
        (name, f"splits {'/'.join(spec.splits)}", spec.description + (f", zero-shot {len(spec.unseen)} unseen" if spec.unseen else ""))
        for name, spec in DATASETS.items()
    ]))
    return 0


def configs(args: argparse.Namespace) -> int:
    from ..training.recipes import KINDS, built_in_recipes

    output(aligned([(f"zsseg train {kind} --config {name}", recipe.description)
                    for kind in KINDS for name, recipe in built_in_recipes(kind).items()]))
    return 0
