"""The accuracy instrument: proxy CLIP training (benchmarks/proxy_clip.py) and the accuracy
benchmark's table (benchmarks/accuracy.py), on tiny cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import DATA

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import accuracy  # noqa: E402
import proxy_clip  # noqa: E402

from zsseg import load_clip  # noqa: E402
from zsseg.data.datasets import load_dataset  # noqa: E402


def test_few_step_proxy_training_gives_a_loadable_clip_whose_loss_goes_down(tmp_path):
    out = tmp_path / "proxy"
    args = proxy_clip.parser().parse_args([
        "--output", str(out), "--images", "6", "--holdout", "0.34", "--steps", "40", "--log-every", "10",
        "--batch-size", "16", "--lr", "1e-3", "--vision-width", "64", "--vision-layers", "2",
        "--text-width", "64", "--text-layers", "1", "--embed-dim", "32", "--threads", "2",
    ])
    result = proxy_clip.train(args)
    curve = result["curve"]
    assert [e["step"] for e in curve] == [10, 20, 30, 40]
    # Fitting a few dozen crops: the last block's loss is well under the first's.
    assert curve[-1]["loss"] < 0.8 * curve[0]["loss"], curve
    clip = load_clip(str(out))
    assert clip.image_size == 224 and clip.embed_dim == 32 and clip.context_length == 77
    assert clip.tokenizer("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    saved = json.loads((out / "training.json").read_text())
    assert saved["curve"] == json.loads(json.dumps(curve))
    for name, classes in (("coco-stuff", 171), ("camvid", 11)):
        held = saved["held_out"][name]
        assert held["images"] == 2 and held["crops"] > 0 and 0 <= held["top1"] <= 100
        assert held["chance_uniform"] == pytest.approx(100 / classes)


def test_train_and_held_out_images_are_disjoint_and_seeded():
    train, held = proxy_clip.split_images(100, 0.15, seed=0)
    assert len(held) == 15 and not set(train) & set(held) and sorted(train + held) == list(range(100))
    assert proxy_clip.split_images(100, 0.15, seed=0) == (train, held)
    assert proxy_clip.split_images(100, 0.15, seed=1) != (train, held)


def test_crops_are_eq1_crops_of_each_ground_truth_class():
    dataset = load_dataset("camvid", DATA, "train")
    crops = proxy_clip.segment_crops(dataset, [0], 224)
    label = dataset.load_label(0)
    assert crops.labels.tolist() == sorted(int(c) for c in set(label[label >= 0].ravel().tolist()))
    assert crops.pixels.shape == (len(crops.labels), 3, 224, 224) and crops.pixels.dtype == torch.float16


def test_augmentation_keeps_the_mean_background_and_flips():
    pixels = torch.zeros(64, 3, 8, 8)
    pixels[:, :, :, :4] = 1.0  # left half bright
    out = proxy_clip.augment(pixels, torch.Generator().manual_seed(0))
    assert out.shape == pixels.shape and out.min() >= 0 and out.max() <= 1
    left, right = out[..., :4].mean(dim=(1, 2, 3)), out[..., 4:].mean(dim=(1, 2, 3))
    assert (left > right).any() and (right > left).any()  # some crops flipped, some not
    assert torch.equal(proxy_clip.augment(torch.zeros(4, 3, 8, 8), torch.Generator()), torch.zeros(4, 3, 8, 8))


def report(miou: float, images: int = 2, **extra) -> dict:
    return {"mIoU": miou, "pAcc": 50.0, "num_images": images, "seconds_per_image": 1.0, **extra}


def test_table_rows_pair_each_two_stage_cell_with_its_oracle_and_ground_truth():
    cells = accuracy.cells(limit=2, max_proposals=100, max_size=1024, ensemble_weight=0.8)
    reports = {
        "camvid-gt": report(40.0),
        "camvid-selective-search": report(5.0),
        "camvid-selective-search-oracle": report(20.0),
        "zs-maskformer-ensemble": report(9.0, mIoU_seen=10.0, mIoU_unseen=4.0, hIoU=5.71),
    }
    rows = accuracy.table_rows(cells, reports)
    assert [r["key"] for r in rows] == ["camvid-gt", "camvid-selective-search", "camvid-selective-search-oracle", "zs-maskformer-ensemble"]
    two_stage = rows[1]
    assert two_stage["expected"] == pytest.approx(40.0 * 20.0 / 100) and "expected" not in rows[0]
    assert rows[-1]["hIoU"] == 5.71 and rows[-1]["protocol"] == "zero-shot"
    text = accuracy.markdown(rows)
    assert "| camvid val | 2 | selective-search, K=100 (Eq. 1 + Eq. 2) | 5.00 | 8.00 | 50.00 | 1.00 |" in text
    assert "| MaskFormer (seen classes), ensemble, lambda=0.8 | 2 | 10.00 | 4.00 | 5.71 | 9.00 | 50.00 | 1.00 |" in text
    zero_shot = [c for c in cells if c.protocol == "zero-shot" and c.needs_weights and "--classifier" in c.args]
    assert [c.args[c.args.index("--classifier") + 1] for c in zero_shot] == ["clip", "network", "ensemble"]
    # The methods' rows: each names its --method, and the FCN's take the FCN weights.
    methods = {c.key: c.args[c.args.index("--method") + 1] for c in cells if "--method" in c.args}
    assert methods["camvid-fast"] == "fast" and methods["zs-dense-sclip"] == "dense-clip" and methods["zs-fcn-network"] == "fcn"
    assert {c.key for c in cells if c.needs_fcn} == {"coco-stuff-fcn", "camvid-fcn", "ade20k-150-fcn", "zs-fcn-network", "zs-fcn-ensemble"}
    fcn = accuracy.command(next(c for c in cells if c.key == "zs-fcn-ensemble"), "clip", None, DATA, "out.json", "runs/fcn")
    assert fcn[fcn.index("--fcn-weights") + 1] == "runs/fcn"


def test_benchmark_runs_zsseg_eval_and_tabulates_its_json(clip_dir, tmp_path):
    result = accuracy.main(["--clip", str(clip_dir), "--data-root", str(DATA), "--limit", "2", "--only", "camvid-gt",
                            "--work-dir", str(tmp_path / "cells"), "--output", str(tmp_path / "accuracy.json"), "--jobs", "1"])
    cell = json.loads((tmp_path / "cells" / "camvid-gt.json").read_text())
    assert cell["proposals"] == "ground-truth" and cell["num_images"] == 2 and cell["clip"] == str(clip_dir)
    [row] = result["rows"]
    assert row["mIoU"] == cell["mIoU"] and row["images"] == 2
    assert json.loads((tmp_path / "accuracy.json").read_text())["rows"] == [row]
    # A second call reuses the cell's JSON rather than re-running it.
    (tmp_path / "cells" / "camvid-gt.log").unlink()
    accuracy.main(["--clip", str(clip_dir), "--limit", "2", "--only", "camvid-gt", "--work-dir", str(tmp_path / "cells"),
                   "--output", str(tmp_path / "again.json")])
    assert not (tmp_path / "cells" / "camvid-gt.log").exists()
    # ... but not one made with other settings.
    with pytest.raises(SystemExit, match="other settings"):
        accuracy.main(["--clip", str(clip_dir), "--limit", "3", "--only", "camvid-gt", "--work-dir", str(tmp_path / "cells"),
                       "--output", str(tmp_path / "stale.json")])


def test_prompt_rows_and_their_staleness(tmp_path):
    from zsseg.prompts.encoding import TemplatePrompt, save_template_prompt

    cells = accuracy.cells(limit=2, max_proposals=100, max_size=1024, ensemble_weight=0.8, prompts={"one": "single"})
    [cell] = [c for c in cells if c.key == "zs-gt-prompt-one"]
    assert cell.protocol == "zero-shot" and cell.args[-2:] == ["--prompt", "single"]
    assert not accuracy._prompt_changed("single", {"prompt": {"kind": "templates", "name": "single"}})
    assert accuracy._prompt_changed("vild", {"prompt": {"kind": "templates", "name": "single"}})
    path = tmp_path / "best.json"
    save_template_prompt(path, TemplatePrompt(("a {}.",), "x"), {})
    recorded = {"prompt": {"kind": "templates", "name": str(path), "templates": ["a {}."]}}
    assert not accuracy._prompt_changed(str(path), recorded)
    save_template_prompt(path, TemplatePrompt(("the {}.",), "x"), {})  # the same file, selected again
    assert accuracy._prompt_changed(str(path), recorded)
