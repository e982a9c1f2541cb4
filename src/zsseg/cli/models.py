"""The models a command builds from its flags: the proposal generator and the `Segmenter`."""

from __future__ import annotations

import argparse

from ..models.precision import resolve_precision
from ..data.datasets import IGNORE
from ..errors import ZssegError
from ..prompts.encoding import load_prompt
from ..proposals import GENERATORS, MaskFormerProposals, ProposalGenerator, build_proposal_generator, parse_generator
from ..segmenter import DEFAULT_MAX_SIZE, Segmenter
from .arguments import DEFAULT_MAX_PROPOSALS, crop_config


def proposal_generator(args: argparse.Namespace, device: str) -> ProposalGenerator:
    method = args.method
    spec = args.proposals or args.default_proposals
    name, _ = parse_generator(spec)
    options = {} if args.max_proposals is None else {"max_proposals": args.max_proposals}
    if GENERATORS[name].pretrained:
        if args.proposal_weights is not None:
            raise ZssegError(f"--proposal-weights is for --proposals maskformer; give a pretrained {name} model as --proposals {name}:MODEL")
        options["device"] = device
    if name == MaskFormerProposals.name:
        if args.proposal_weights is None:
            raise ZssegError("--proposals maskformer needs --proposal-weights (the --output-dir of `zsseg train proposals`)")
        options.update(weights=args.proposal_weights, device=device, clip=args.clip, tokenizer=args.tokenizer,
                       dtype="bf16" if resolve_precision(args.dtype, device) == "bf16" else "fp32")  # the network: bf16 autocast or fp32
    else:
        for flag, value in (("--proposal-weights", args.proposal_weights), ("--ensemble-weight", args.ensemble_weight)):
            if value is not None and not (method == "fcn" and flag == "--ensemble-weight"):
                raise ZssegError(f"{flag} is for --proposals maskformer, not {name}")
    if GENERATORS[name].needs_ground_truth:
        options["ignore_index"] = IGNORE
    elif "max_proposals" not in options:
        options["max_proposals"] = DEFAULT_MAX_PROPOSALS
    return build_proposal_generator(spec, **options)


def build_segmenter(args: argparse.Namespace, device: str, proposals: ProposalGenerator) -> Segmenter:
    return Segmenter(
        clip=args.clip,
        tokenizer=args.tokenizer,
        proposals=proposals,
        prompt=args.prompt,
        network_prompt=args.network_prompt,
        device=device,
        dtype=args.dtype,
        max_size=DEFAULT_MAX_SIZE if args.max_size is None else args.max_size,
        test_size=args.test_size,
        crop=crop_config(args),
        batch_size=args.batch_size,
        ensemble_weight=args.ensemble_weight,
        classifier=args.classifier,
        text_cache=not args.no_text_cache,
        method=args.method,
        dense_mode=args.dense_mode,
        overlap=args.overlap,
        fcn=args.fcn_weights,
    )


def check_prompt(args: argparse.Namespace) -> None:
    """A misspelt prompt or a broken prompt file is an error before any model loads."""
    for flag in ("prompt", "network_prompt"):
        if getattr(args, flag, None) is not None and not getattr(args, "oracle", False):
            load_prompt(getattr(args, flag))
