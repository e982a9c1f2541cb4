"""`zsseg demo`: the web page for segmenting your own photos (Gradio, an optional extra)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import threading
from typing import TYPE_CHECKING, Callable

from ..catalogue import DEFAULT_MAX_PROPOSALS, GENERATORS, MASKFORMER, METHODS, parse_generator
from ..errors import ZssegError
from .arguments import PORT, PRETRAINED_PROPOSALS, USABLE_PROPOSALS, model_options

if TYPE_CHECKING:
    from ..proposals import ProposalGenerator
    from ..segmenter import Segmenter

# The demo offers the pretrained generators only as given at start (`--proposals sam:MODEL`):
# offering them all would download every default model (SAM is 375 MB) for a page that may
# never use them.
DEMO_PROPOSALS = [name for name in USABLE_PROPOSALS if name not in PRETRAINED_PROPOSALS]


def add_parser(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="a web page for segmenting your own photos (needs: pip install \"zsseg[demo]\")",
        description="Serve a Gradio page: upload an image, type class names or pick a built-in vocabulary, choose the method, "
        "proposals and K, and get the overlay, the classes present with their share of the pixels, and the label PNG and "
        "JSON. CLIP loads once; the model flags below set what the page starts with. Uploads are bounded in bytes and pixels, "
        "requests run one at a time, and the page reads no path from its users (limits: the README's Web demo section).",
    )
    model_options(demo, USABLE_PROPOSALS)
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to your network)")
    demo.add_argument("--port", type=PORT, default=7860, help="port to serve on, 1..65535 (default 7860)")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve the web demo until Ctrl-C. Everything that can fail (gradio missing, CLIP, the
    page's initial settings, the port) fails before the page is served, in one line."""
    try:
        importlib.import_module("zsseg.demo")  # sets gradio's folder, then imports it (the optional extra)
        importlib.import_module("gradio")
    except ImportError as error:
        if (error.name or "").split(".")[0] == "gradio":
            raise ZssegError('the web demo needs gradio, which is not installed: pip install "zsseg[demo]"') from None
        raise ZssegError(f'gradio cannot be imported ({error}); reinstall it: pip install "zsseg[demo]"') from None
    from ..config import SegmenterConfig, check_prompts
    from ..demo import Demo, example_images
    from .models import base_config, settings

    config = base_config(args)[0]
    options = settings(args)
    first = SegmenterConfig.from_options(config, **options)
    check_prompts(first)
    clip = first.clip.load()
    proposal = None if first.proposals is None else options.get("proposals") or first.proposals.name
    page = Demo(_demo_segmenters(args, clip), list(METHODS), DEMO_PROPOSALS, method=first.method, proposal=proposal,
                max_proposals=first.proposals.max_proposals if first.proposals else DEFAULT_MAX_PROPOSALS,
                max_size=first.size.max_size, examples=example_images(), explain=args.explain)
    for reason in page.left_out:
        print(f"zsseg: not offered on the page: {reason}", file=sys.stderr)
    try:
        server = page.launch(args.host, args.port, block=False)
    except OSError as error:
        raise ZssegError(f"cannot serve on {args.host}:{args.port}: {error}") from None
    print(f"zsseg: the demo is at http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    try:
        threading.Event().wait()
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # Gradio's "Closing server running on port: ..."
            server.close()
    return 0


def _demo_segmenters(args: argparse.Namespace, clip) -> Callable[[str, str | None, int | None], Segmenter]:
    """Builds the page's segmenter for (method, proposals, K) as `zsseg segment` would with
    those settings (and the others as given where they apply: `zsseg.config.applicable`), around
    the one loaded `clip`, so that the page can switch between a trained network and the
    training-free generators. A generator that loads a network (maskformer, sam, mask2former)
    loads it once: the segmenters for other K take a copy that shares it."""
    from ..config import applicable
    from ..segmenter import Segmenter
    from .models import base_config, settings

    config, options = base_config(args)[0], settings(args)
    networks: dict[str, ProposalGenerator] = {}

    def make(method: str, proposals: str | None, max_proposals: int | None) -> Segmenter:
        chosen = applicable({**options, "method": method, "proposals": proposals, "max_proposals": max_proposals})
        if proposals is not None and (GENERATORS[parse_generator(proposals)[0]].pretrained or proposals == MASKFORMER):
            if proposals not in networks:
                networks[proposals] = Segmenter(config, **{**chosen, "clip": clip}).proposals
            chosen["proposals"] = networks[proposals]
            chosen.pop("proposal_weights", None)
        return Segmenter(config, **{**chosen, "clip": clip})

    return make
