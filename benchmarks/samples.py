"""Where the benchmarks find the real data samples and CLIP's tokenizer, and the small random
models of `zsseg.tiny_clip` made with that tokenizer.

    from samples import DATA, TOKENIZER, save_tiny_clip

`DATA` is `$ZSSEG_TEST_DATA`, else `shared/data` beside the checkout; `TOKENIZER` is
`$ZSSEG_TEST_TOKENIZER`, else `shared/clip-tokenizer` (CLIP's BPE files: `vocab.json`,
`merges.txt`). Both are read in place, never copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = Path(os.environ.get("ZSSEG_TEST_DATA", SHARED / "data"))
TOKENIZER = Path(os.environ.get("ZSSEG_TEST_TOKENIZER", SHARED / "clip-tokenizer"))


def save_tiny_clip(folder: Path, image_size: int = 224, seed: int = 0) -> Path:
    """A small random CLIP with CLIP's real tokenizer, saved as a checkpoint folder (what `--clip`
    takes): it runs everything zsseg does, with meaningless predictions (`zsseg.tiny_clip`)."""
    from zsseg import tiny_clip

    return tiny_clip.save_tiny_clip(folder, TOKENIZER, image_size=image_size, seed=seed)


def save_tiny_reference_checkpoint(path: Path, **options) -> Path:
    """A small random checkpoint in the authors' format, named from the reference-parity key list."""
    from zsseg import tiny_clip

    return tiny_clip.save_tiny_reference_checkpoint(path, SHARED / "reference-parity" / "keys-coco-stuff-156-single-prompt.txt",
                                                    **options)
