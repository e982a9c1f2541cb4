"""The accuracy instrument: proxy CLIP training (benchmarks/proxy_clip.py) and the accuracy
benchmark's table (benchmarks/accuracy.py), each run as the script it is, on tiny cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA

from zsseg import load_clip

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_few_step_proxy_training_gives_a_loadable_clip_whose_loss_goes_down(tmp_path):
    out = tmp_path / "proxy"
    done = _script("proxy_clip.py", "--output", out, "--images", "6", "--holdout", "0.34", "--steps", "40", "--log-every", "10",
                   "--batch-size", "16", "--lr", "1e-3", "--vision-width", "64", "--vision-layers", "2",
                   "--text-width", "64", "--text-layers", "1", "--embed-dim", "32", "--threads", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((out / "training.json").read_text())
    curve = saved["curve"]
    assert [e["step"] for e in curve] == [10, 20, 30, 40]
    # Fitting a few dozen crops: the last block's loss is well under the first's.
    assert curve[-1]["loss"] < 0.8 * curve[0]["loss"], curve
    clip = load_clip(str(out))
    assert clip.image_size == 224 and clip.embed_dim == 32 and clip.context_length == 77
    assert clip.tokenizer("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    for name, classes in (("coco-stuff", 171), ("camvid", 11)):
        held = saved["held_out"][name]
        # 6 images, a third held out: 4 to train on, 2 to measure, none in both
        assert held["images"] == 2 and saved["data"][name]["train_images"] == 4
        assert held["crops"] > 0 and 0 <= held["top1"] <= 100
        assert held["chance_uniform"] == pytest.approx(100 / classes)


def test_benchmark_runs_zsseg_eval_and_tabulates_its_json(clip_dir, tmp_path):
    common = ["--clip", clip_dir, "--data-root", DATA, "--limit", "1", "--max-size", "160", "--max-proposals", "5",
              "--work-dir", tmp_path / "cells", "--jobs", "1"]
    done = _script("accuracy.py", *common, "--only", "camvid-gt", "camvid-selective-search", "--output", tmp_path / "accuracy.json")
    assert done.returncode == 0, done.stderr[-3000:]
    cells = {key: json.loads((tmp_path / "cells" / f"{key}.json").read_text())
             for key in ("camvid-gt", "camvid-selective-search", "camvid-selective-search-oracle")}
    config = cells["camvid-gt"]["config"]
    assert config["proposals"]["name"] == "ground-truth" and cells["camvid-gt"]["num_images"] == 1
    assert config["clip"]["source"] == str(clip_dir) and config["size"]["max_size"] == 160
    assert cells["camvid-selective-search-oracle"]["config"]["oracle"] is True
    rows = {row["key"]: row for row in json.loads((tmp_path / "accuracy.json").read_text())["rows"]}
    assert set(rows) == set(cells)
    assert all(rows[key]["mIoU"] == cell["mIoU"] and rows[key]["images"] == 1 for key, cell in cells.items())
    # a two-stage row is paired with its oracle and its ground-truth row: their product is the
    # independent-errors guess
    expected = cells["camvid-gt"]["mIoU"] * cells["camvid-selective-search-oracle"]["mIoU"] / 100
    assert rows["camvid-selective-search"]["expected"] == pytest.approx(expected) and "expected" not in rows["camvid-gt"]
    assert "proxy-CLIP figures, not comparable with the paper's:" in done.stdout
    assert "| camvid val | 1 | selective-search, K=5 (Eq. 1 + Eq. 2) |" in done.stdout
    # A second run reuses the cells' JSON rather than re-running them...
    (tmp_path / "cells" / "camvid-gt.log").unlink()
    again = _script("accuracy.py", *common, "--only", "camvid-gt", "--output", tmp_path / "again.json")
    assert again.returncode == 0 and not (tmp_path / "cells" / "camvid-gt.log").exists(), again.stderr[-3000:]
    # ... but not ones made with other settings.
    stale = _script("accuracy.py", *common[:-4], "--max-size", "128", "--work-dir", tmp_path / "cells", "--only", "camvid-gt",
                    "--output", tmp_path / "stale.json")
    assert stale.returncode != 0 and "camvid-gt.json" in stale.stderr and "other settings" in stale.stderr
