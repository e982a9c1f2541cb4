"""Time to encode a vocabulary's text features, without and with the disk cache.

    python benchmarks/text_encoding.py --vocabulary ade20k-847 --prompt imagenet

A full-size CLIP ViT-B/16 text tower (random weights: the time does not depend on them) is saved
with CLIP's real tokenizer and loaded through `zsseg.load_clip`. Each run is a fresh process, as
a user's successive commands are: the first finds the cache empty and encodes every prompt, the
second reads the features the first stored. Both runs' features are compared bit for bit. The
cost of the text features is the model's fingerprint (the cache key, paid by both runs) plus
the encoding or the cache read; loading CLIP is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def one_run(clip: str, vocabulary: str, prompt: str, features: Path) -> dict:
    """In this process: load CLIP, encode the vocabulary (through the cache in $ZSSEG_CACHE_DIR)."""
    import torch

    from zsseg import Vocabulary, load_clip
    from zsseg.prompts.encoding import PromptEncoder

    start = time.perf_counter()
    model = load_clip(clip)
    loaded = time.perf_counter()
    encoder = PromptEncoder(model, prompt)
    model.text_fingerprint()
    fingerprinted = time.perf_counter()
    embedding = encoder.encode_vocabulary(Vocabulary.preset(vocabulary))
    done = time.perf_counter()
    torch.save(embedding.features, features)
    templates = len(encoder.templates or ()) or 1
    return {"load_s": loaded - start, "fingerprint_s": fingerprinted - loaded, "encode_s": done - fingerprinted,
            "names": int(embedding.features.shape[0]), "prompts": int(embedding.features.shape[0]) * templates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabulary", default="ade20k-847")
    parser.add_argument("--prompt", default="imagenet")
    parser.add_argument("--child", nargs=3, metavar=("CLIP", "CACHE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        os.environ["ZSSEG_CACHE_DIR"] = args.child[1]
        print(json.dumps(one_run(args.child[0], args.vocabulary, args.prompt, Path(args.child[2]))))
        return

    import torch

    from stage_timing import save_vit_b16

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; vocabulary {args.vocabulary}, prompt {args.prompt}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip"
        save_vit_b16(clip)
        runs = []
        for name in ("first (empty cache)", "second (cache filled by the first)"):
            out = Path(tmp) / f"features-{len(runs)}.pt"
            proc = subprocess.run([sys.executable, __file__, "--vocabulary", args.vocabulary, "--prompt", args.prompt,
                                   "--child", str(clip), str(Path(tmp) / "cache"), str(out)],
                                  capture_output=True, text=True, check=True)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.append(result)
            print(f"{name:36s} load {result['load_s']:6.1f} s  fingerprint {result['fingerprint_s']:5.2f} s  "
                  f"encode {result['encode_s']:8.2f} s  ({result['names']} names, {result['prompts']} prompts)")
        same = torch.equal(torch.load(Path(tmp) / "features-0.pt"), torch.load(Path(tmp) / "features-1.pt"))
        size = (Path(tmp) / "cache" / "text-features.sqlite3").stat().st_size
    cost = [r["fingerprint_s"] + r["encode_s"] for r in runs]  # what a command pays for its text features
    print(f"text features: {cost[0]:.1f} s, then {cost[1]:.2f} s with the cache ({cost[0] / cost[1]:.0f}x faster); "
          f"features bit-identical: {same}; cache file {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
