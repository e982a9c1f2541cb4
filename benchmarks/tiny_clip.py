"""Save a small random vision-language model: the installed `python -m zsseg.tiny_clip`, with
CLIP's real BPE files from ../shared/clip-tokenizer for the clip family.

    python benchmarks/tiny_clip.py /tmp/tclip                          # transformers CLIP ViT
    python benchmarks/tiny_clip.py /tmp/trn --family open-clip-resnet  # open_clip folder, ResNet tower
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from samples import TOKENIZER  # noqa: E402

from zsseg.tiny_clip import main  # noqa: E402

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--tokenizer" not in arguments:
        arguments += ["--tokenizer", str(TOKENIZER)]
    sys.exit(main(arguments))
