"""Save a small random vision-language model with real tokenizer conventions, in the format a
user's download has (no hub needed).

    python benchmarks/tiny_clip.py /tmp/tclip                        # transformers CLIP ViT
    python benchmarks/tiny_clip.py /tmp/trn --family open-clip-resnet  # open_clip folder, ResNet tower
    python benchmarks/tiny_clip.py /tmp/tsig --family siglip          # transformers SigLIP

The CLIP families use CLIP's real BPE tokenizer (open_clip folders carry none: pass
`--tokenizer ../shared/clip-tokenizer`). Their text embeddings differ per class name but carry
no meaning: enough to train and time the proposal network (whose oracle score never reads the
class head) and to run every command, not to measure accuracy.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from samples import save_tiny_clip, save_tiny_open_clip, save_tiny_siglip  # noqa: E402

FAMILIES = {
    "clip": save_tiny_clip,
    "open-clip-vit": lambda folder: save_tiny_open_clip(folder, "vit"),
    "open-clip-resnet": lambda folder: save_tiny_open_clip(folder, "resnet"),
    "siglip": save_tiny_siglip,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to save it (a new or empty folder)")
    parser.add_argument("--family", choices=list(FAMILIES), default="clip", help="the model family and format (default clip)")
    args = parser.parse_args()
    from zsseg.hub import quiet_transformers

    with quiet_transformers():  # transformers' notes (torchvision missing) and its shard-writing bar
        folder = FAMILIES[args.family](args.folder)
    print(folder)
