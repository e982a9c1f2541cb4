"""Where the benchmarks (and the tests) find the real data samples and CLIP's tokenizer, and a
small random CLIP saved with that tokenizer: the library alone, no pytest.

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


def tiny_clip_config(image_size: int = 224):
    """A 2-layer, 64-wide CLIP (both towers) with CLIP's real vocabulary and token ids."""
    import numpy as np
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=32),
        projection_dim=32,
        logit_scale_init_value=float(np.log(100.0)),  # CLIP's trained value, so logits match Eq. 1
    )


def save_tiny_clip(folder: Path, image_size: int = 224, seed: int = 0) -> Path:
    """A random CLIP with CLIP's real tokenizer, saved as a checkpoint folder (what `--clip`
    takes): it runs everything zsseg does, with meaningless predictions."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    if not (TOKENIZER / "vocab.json").is_file():
        raise FileNotFoundError(f"CLIP tokenizer files not found under {TOKENIZER}; set ZSSEG_TEST_TOKENIZER")
    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config(image_size)).eval()
    model.save_pretrained(folder)
    CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt")).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
