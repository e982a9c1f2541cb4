"""What a command's model flags configure: the `SegmenterConfig` of --config and the flags, and
the segmenter built from it."""

from __future__ import annotations

import argparse

from .arguments import given_settings


def settings(args: argparse.Namespace) -> dict:
    """The segmenter settings of the command line (`zsseg.config.OPTIONS`), with the command's
    default precision where neither --dtype nor --config gives one."""
    given = given_settings(args)
    if "dtype" not in given and getattr(args, "config", None) is None and getattr(args, "default_dtype", None):
        given["dtype"] = args.default_dtype
    return given


def base_config(args: argparse.Namespace):
    """The configuration of --config's file (None without one), and the vocabulary it records."""
    if getattr(args, "config", None) is None:
        return None, None
    from ..config import load_config

    return load_config(args.config)


def segmenter_config(args: argparse.Namespace):
    """The whole configuration (checked: a setting the method does not take is an error now,
    before any model loads)."""
    from ..config import SegmenterConfig

    return SegmenterConfig.from_options(base_config(args)[0], **settings(args))
