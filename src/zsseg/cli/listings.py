"""`zsseg configs`, `zsseg vocabularies`, `zsseg datasets` (its parser is in `datasets`): what zsseg has built in."""

from __future__ import annotations

import argparse

from ..fcn_config import FCN_CONFIGS
from ..maskformer.config import CONFIGS
from ..prompt_config import PROMPT_CONFIGS
from ..vocabulary import PRESETS, Vocabulary
from .outputs import output


def add_parser(commands) -> None:
    commands.add_parser("configs", help="list the named configs of `zsseg train proposals`, `zsseg train fcn` and `zsseg train prompts`").set_defaults(run=configs)
    commands.add_parser("vocabularies", help="list the built-in vocabularies").set_defaults(run=vocabularies)


def vocabularies(args: argparse.Namespace) -> int:
    output(f"{name:20s} {len(Vocabulary.preset(name)):4d} classes  {description}" for name, description in PRESETS.items())
    return 0


def datasets(args: argparse.Namespace) -> int:
    from ..datasets import DATASETS

    output(
        f"{name:20s} splits {'/'.join(spec.splits):18s} {spec.description}"
        + (f", zero-shot {len(spec.unseen)} unseen" if spec.unseen else "")
        for name, spec in DATASETS.items()
    )
    return 0


def configs(args: argparse.Namespace) -> int:
    output(
        [f"zsseg train proposals --config {name:14s} {config.description}" for name, config in CONFIGS.items()]
        + [f"zsseg train fcn --config {name:20s} {config.description}" for name, config in FCN_CONFIGS.items()]
        + [f"zsseg train prompts --config {name:16s} {config.description}" for name, config in PROMPT_CONFIGS.items()]
    )
    return 0
