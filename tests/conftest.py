"""Shared fixtures: a tiny random CLIP saved like a real checkpoint, and the real data samples."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest

# Under pytest-xdist (the README's test command runs one worker per core), each worker and the
# commands it launches get an equal share of the cores: torch's default of one thread per core in
# every worker would oversubscribe them, and OpenMP threads that spin-wait for a busy core are
# slower than fewer threads. Set before torch is imported, so the launched commands inherit it.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import torch  # noqa: E402

from zsseg import tiny_clip  # noqa: E402

# Where the real samples and CLIP's tokenizer are: `shared/` beside the checkout, read in place,
# never copied into the project (elsewhere: $ZSSEG_TEST_DATA and $ZSSEG_TEST_TOKENIZER).
SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(os.environ.get("ZSSEG_TEST_DATA", SHARED / "data"))
TOKENIZER = Path(os.environ.get("ZSSEG_TEST_TOKENIZER", SHARED / "clip-tokenizer"))


def save_tiny_clip(folder: Path, image_size: int = 224, seed: int = 0) -> Path:
    """A small random CLIP with CLIP's real tokenizer, saved as a checkpoint folder."""
    return tiny_clip.save_tiny_clip(folder, TOKENIZER, image_size=image_size, seed=seed)


def pytest_sessionstart(session):
    """Without the real samples or CLIP's tokenizer most tests would fail, each the same way: say
    it once, with how to point at them, and stop (status 4)."""
    missing = [f"{what} not found under {path}: set {variable}"
               for what, path, needed, variable in (("the real data samples", DATA, "coco/val2017", "ZSSEG_TEST_DATA"),
                                                   ("CLIP's tokenizer", TOKENIZER, "vocab.json", "ZSSEG_TEST_TOKENIZER"))
               if not (path / needed).exists()]
    if missing:
        pytest.exit("; ".join(missing) + " (by default both are in ../shared beside the checkout)", returncode=4)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where CUDA is available; elsewhere they are skipped, saying why."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False); benchmarks/gpu_check.sh runs these on one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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


def run_here(capsys, args, env=None) -> subprocess.CompletedProcess:
    """`zsseg ARGS` in this process (`zsseg.cli.main`), captured like `run`'s fresh process: for
    bad-input messages and small listings, which need no process of their own (its imports take
    seconds). Keep `run` for true end-to-end runs, and wherever a fresh process is the point.

    `env` is set for the call only. What a fresh process would print besides, this prints too:
    Python's warnings under its default filters (pytest would only collect them), and log records
    that no handler takes (pytest's own handlers are set aside); argparse's exit is the status."""
    from zsseg.cli import main

    capsys.readouterr()  # what came before is not this command's output
    root, sigterm = logging.getLogger(), signal.getsignal(signal.SIGTERM)
    handlers = root.handlers[:]
    with mock.patch.dict(os.environ, env or {}), warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        root.handlers[:] = []
        try:
            status = main([str(a) for a in args])
        except SystemExit as stop:  # argparse's usage errors and --help
            status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        finally:
            root.handlers[:] = handlers
            signal.signal(signal.SIGTERM, sigterm)  # main's handler is for its own process
    captured = capsys.readouterr()
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return subprocess.CompletedProcess(["zsseg", *map(str, args)], status, captured.out, captured.err + shown)


def subset(name: str, split: str, count: int):
    """The first `count` samples of a real benchmark split."""
    from zsseg.data.datasets import load_dataset

    dataset = load_dataset(name, DATA, split)
    dataset.samples = dataset.samples[:count]
    return dataset


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


def save_tiny_sam(folder: Path, confident: bool = True, hq: bool = False, seed: int = 0) -> Path:
    """A random SAM (or SAM-HQ) with a 128-pixel encoder, saved as a checkpoint folder. A random
    SAM predicts an IoU near 0 and logits near 0, so no mask passes the automatic generator's
    filters; `confident` sets its IoU head to 0.95 and scales its mask logits up, so that some do."""
    from transformers import SamConfig, SamHQConfig, SamHQModel, SamModel

    torch.manual_seed(seed)
    parts = dict(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=128,
                           patch_size=16, output_channels=32, window_size=4, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32,
                                 **({"vit_dim": 32} if hq else {})),
    )
    model = (SamHQModel(SamHQConfig(**parts)) if hq else SamModel(SamConfig(**parts))).eval()
    if confident:
        with torch.no_grad():
            head = model.mask_decoder.iou_prediction_head.proj_out
            head.weight.zero_()
            head.bias.fill_(0.95)
            for mlp in model.mask_decoder.output_hypernetworks_mlps:
                mlp.proj_out.weight.mul_(5e6)
    model.save_pretrained(folder)
    return folder


def save_tiny_query_model(folder: Path, kind: str = "mask2former", seed: int = 0) -> Path:
    """A random MaskFormer, Mask2Former or OneFormer (12 queries, tiny Swin) saved as a
    checkpoint folder, with an image processor config (shorter side 160) and, for OneFormer,
    CLIP's tokenizer for its task token."""
    import json

    from transformers import (CLIPTokenizerFast, Mask2FormerConfig, Mask2FormerForUniversalSegmentation, MaskFormerConfig,
                              MaskFormerForInstanceSegmentation, OneFormerConfig, OneFormerForUniversalSegmentation, SwinConfig)

    torch.manual_seed(seed)
    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    if kind == "mask2former":
        model = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(
            backbone_config=swin, hidden_dim=32, num_queries=12, encoder_layers=1, decoder_layers=2, dim_feedforward=64,
            mask_feature_size=32, feature_size=32, num_labels=5, encoder_feedforward_dim=64, num_attention_heads=2))
    elif kind == "maskformer":
        model = MaskFormerForInstanceSegmentation(MaskFormerConfig(
            backbone_config=swin, num_labels=5, fpn_feature_size=32, mask_feature_size=32,
            decoder_config=dict(num_queries=12, d_model=32, encoder_layers=1, decoder_layers=1, decoder_ffn_dim=64, encoder_ffn_dim=64,
                                decoder_attention_heads=2, encoder_attention_heads=2)))
    else:
        model = OneFormerForUniversalSegmentation(OneFormerConfig(
            backbone_config=swin, hidden_dim=32, num_queries=12, encoder_layers=1, decoder_layers=2, dim_feedforward=64,
            mask_dim=32, conv_dim=32, num_attention_heads=2, encoder_feedforward_dim=64, num_labels=5, text_encoder_width=32,
            text_encoder_num_layers=1, text_encoder_proj_layers=1, text_encoder_n_ctx=4))
        CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt")).save_pretrained(folder)
    model.eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "size": {"shortest_edge": 160, "longest_edge": 320}, "size_divisor": 32}))
    return folder


@pytest.fixture(scope="session")
def sam_dir(tmp_path_factory) -> Path:
    return save_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


def recorded(report: dict) -> dict:
    """The settings an evaluation's JSON records (under "config" and "benchmark"), flat, for
    assertions: test_size is [shorter, longer], prompts are their records."""
    config, benchmark = report["config"], report["benchmark"]
    models = config.get("models") or {}
    ensemble = models.get("ensemble") or {}
    proposals = config.get("proposals") or {}
    return {
        "oracle": bool(config.get("oracle")),
        "method": config.get("method"),
        "proposals": proposals.get("name"),
        "max_proposals": proposals.get("max_proposals"),
        "clip": (models.get("clip") or {}).get("source"),
        "dtype": (models.get("clip") or {}).get("precision"),
        "prompt": models.get("prompt"),
        "network_prompt": models.get("network_prompt"),
        "ensemble_weight": ensemble.get("weight"),
        "classifier": ensemble.get("classifier") if ensemble else None,
        "test_size": [config["size"]["test_size"], config["size"]["max_size"]],
        "mask_threshold": (config.get("region") or {}).get("crop", {}).get("threshold") if proposals and not config.get("oracle") else None,
        "seen_classes": benchmark.get("seen_classes"),
        "class_names": benchmark.get("class_names"),
        "miou_rule": benchmark.get("miou_rule"),
        "benchmark_settings": benchmark.get("settings"),
    }
