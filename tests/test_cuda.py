"""The CUDA paths: training with bf16 autocast, pinned memory and workers, resuming on the GPU,
and inference with a bf16 CLIP. Marked `cuda`: skipped without a GPU (`benchmarks/gpu_check.sh`
runs them where there is one)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import DATA, run, subset
from zsseg import Segmenter, load_clip
from zsseg.runs.distributed import Distributed
from zsseg.training.recipes import load_recipe
from zsseg.training.proposals import train_proposals
from zsseg.networks.maskformer.weights import load_proposals
from zsseg.proposals import MaskFormerProposals

pytestmark = pytest.mark.cuda
TINY = load_recipe("proposals", "tiny")
CONFIG = replace(TINY, train=replace(TINY.train, crop_size=128, batch_size=2, log_every=1, checkpoint_every=2))


def test_training_on_cuda_with_workers_and_bf16_matches_fp32_and_resumes(clip_dir, tmp_path):
    clip = load_clip(str(clip_dir), device="cuda")
    dataset = subset("coco-stuff", "train", 4)
    gpu = Distributed(device="cuda")
    config = replace(CONFIG, train=replace(CONFIG.train, max_iters=4))
    for dtype in ("fp32", "bf16"):
        train_proposals(dataset, config, clip, tmp_path / dtype, "zero-shot", context=gpu, progress=False, workers=2, dtype=dtype)
    first = {d: json.loads((tmp_path / d / "log.jsonl").read_text().splitlines()[0])["loss"] for d in ("fp32", "bf16")}
    assert first["fp32"] != first["bf16"] and abs(first["bf16"] - first["fp32"]) / first["fp32"] < 2 * 2**-8
    # A run cut after its step-2 checkpoint and resumed on the GPU (CUDA RNG restored) ends the same.
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint-0000002.pt").write_bytes((tmp_path / "bf16" / "checkpoint-0000002.pt").read_bytes())
    result = train_proposals(dataset, config, clip, tmp_path / "cut", "zero-shot", context=gpu, progress=False, workers=2, dtype="bf16")
    assert result.resumed_from == 2
    whole, cut = (load_proposals(tmp_path / n).model.state_dict() for n in ("bf16", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


def test_segment_on_cuda_in_bf16_agrees_with_fp32(clip_dir, tmp_path):
    train_proposals(subset("coco-stuff", "train", 2), replace(CONFIG, train=replace(CONFIG.train, max_iters=2)),
                    load_clip(str(clip_dir)), tmp_path / "net", "zero-shot", progress=False)
    image = DATA / "coco" / "val2017" / "000000010092.jpg"
    maps = {}
    for dtype in ("fp32", "bf16"):
        segmenter = Segmenter(clip=str(clip_dir), proposals=MaskFormerProposals(tmp_path / "net", device="cuda", dtype=dtype),
                              device="cuda", dtype=dtype, max_size=320)
        maps[dtype] = segmenter.segment(image, "cat; car; wall; floor; person").label_map
    assert maps["fp32"].shape == maps["bf16"].shape
    assert np.mean(maps["fp32"] == maps["bf16"]) > 0.9


def test_cli_eval_on_cuda(clip_dir, tmp_path):
    proc = run(["eval", "--dataset", "voc-20", "--data-root", str(DATA), "--clip", str(clip_dir), "--device", "cuda",
                "--dtype", "bf16", "--proposals", "selective-search", "--limit", "2", "--workers", "2",
                "--output", str(tmp_path / "voc.json")])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "voc.json").read_text())["num_images"] == 2
