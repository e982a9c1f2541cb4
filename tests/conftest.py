"""Shared fixtures: a tiny random CLIP saved like a real checkpoint, and the real data samples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(os.environ.get("ZSSEG_TEST_DATA", SHARED / "data"))
TOKENIZER = Path(os.environ.get("ZSSEG_TEST_TOKENIZER", SHARED / "clip-tokenizer"))


@pytest.fixture(autouse=True, scope="session")
def _private_text_cache(tmp_path_factory):
    """Tests never read or write the user's text-feature cache (~/.cache/zsseg): each session
    has its own, so the cache is exercised without depending on earlier runs."""
    old = os.environ.get("ZSSEG_CACHE_DIR")
    os.environ["ZSSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("zsseg-cache"))
    yield
    if old is None:
        os.environ.pop("ZSSEG_CACHE_DIR", None)
    else:
        os.environ["ZSSEG_CACHE_DIR"] = old


def run(args, env=None, module=("-m", "zsseg")):
    """A command in a fresh Python process (`python -m zsseg ARGS` by default), captured."""
    return subprocess.run([sys.executable, *module, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def subset(name: str, split: str, count: int):
    """The first `count` samples of a real benchmark split."""
    from zsseg.datasets import load_dataset

    dataset = load_dataset(name, DATA, split)
    dataset.samples = dataset.samples[:count]
    return dataset


def tiny_clip_config(image_size: int = 224):
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
    """A random CLIP with CLIP's real tokenizer, saved as a checkpoint folder."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    if not (TOKENIZER / "vocab.json").is_file():
        pytest.fail(f"CLIP tokenizer files not found under {TOKENIZER}; set ZSSEG_TEST_TOKENIZER")
    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config(image_size)).eval()
    model.save_pretrained(folder)
    CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt")).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def clip(clip_dir):
    from zsseg import load_clip

    return load_clip(str(clip_dir))


@pytest.fixture(scope="session")
def coco_val() -> list[tuple[Path, Path]]:
    """(image, label map) pairs of the real COCO-Stuff val2017 samples."""
    images = sorted((DATA / "coco" / "val2017").glob("*.jpg"))
    if not images:
        pytest.fail(f"real COCO-Stuff samples not found under {DATA}; set ZSSEG_TEST_DATA")
    return [(p, DATA / "coco" / "stuffthingmaps_detectron2" / "val2017" / f"{p.stem}.png") for p in images]
