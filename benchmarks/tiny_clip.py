"""Save a small random CLIP with CLIP's real tokenizer, as a checkpoint folder (no hub needed).

    python benchmarks/tiny_clip.py /tmp/tclip

Its text embeddings differ per class name but carry no meaning: enough to train and time the
proposal network (whose oracle score never reads the class head), not to measure accuracy.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from samples import save_tiny_clip  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to save it (a new or empty folder)")
    print(save_tiny_clip(parser.parse_args().folder))
