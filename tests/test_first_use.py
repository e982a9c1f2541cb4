"""What a new user trips on (the second bad-input sweep): flag ranges, messages, signals,
folders, resuming a long run, progress in a log. Each case failed before it was mended."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, run, run_here
from test_safety import _png_header_only
from zsseg.cli import main


def _one_line(result, status=2):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def _photos(folder, count, size=(48, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


# --- 1. every number flag has its real range -----------------------------------------------------

@pytest.mark.parametrize("command", [
    ["train", "proposals", "--config", "tiny"],
    ["train", "fcn", "--config", "cpu"],
    ["train", "prompts", "--config", "cpu"],
])
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seeds_out_of_range_are_one_line_and_leave_no_folder(tmp_path, capsys, command, seed):
    out = tmp_path / "out"
    result = run_here(capsys, [*command, "--dataset", "coco-stuff", "--data-root", str(DATA), "--seed", seed, "--output-dir", str(out)])
    assert "--seed: must be in 0..4294967295" in _one_line(result)
    assert not out.exists()


def test_ports_and_temperatures_out_of_range(tmp_path, capsys):
    assert "--port: must be in 1..65535, got 70000" in _one_line(run_here(capsys, ["demo", "--port", "70000"]))
    for value in ("inf", "nan", "-1", "0"):
        result = run_here(capsys, ["train", "prompts", "--dataset", "coco-stuff", "--data-root", str(DATA), "--temperature", value,
                                   "--output-dir", str(tmp_path / "p")])
        assert "--temperature: must be a finite number above 0" in _one_line(result)
    for flag in ("--ensemble-weight", "--mask-threshold", "--overlap"):
        result = run_here(capsys, ["segment", str(tmp_path), "--classes", "cat", "--out", str(tmp_path / "o"), flag, "nan"])
        assert f"{flag}: must be in [0, 1" in _one_line(result)


# --- 6. messages -----------------------------------------------------------------------------------

def test_a_huge_image_in_a_folder_gives_zssegs_line_only(clip_dir, tmp_path):
    """Pillow's DecompressionBombWarning (two lines) used to print before zsseg's own line."""
    folder = _photos(tmp_path / "in", 1)
    _png_header_only(folder / "huge.png", 11000, 11000)  # 121 MP: above Pillow's warning, below zsseg's limit
    result = run(["segment", str(folder), "--classes", "cat; dog", "--clip", str(clip_dir), "--max-size", "64",
                  "--max-proposals", "4", "--out", str(tmp_path / "out")])
    assert result.returncode == 1 and "DecompressionBomb" not in result.stderr and "Warning" not in result.stderr, result.stderr
    assert "huge.png: corrupt or truncated image" in result.stderr


def test_a_text_cache_folder_that_is_a_file_and_a_damaged_cache(tmp_path, caplog):
    from zsseg.prompts.text_cache import FILE_NAME, TextFeatureCache

    (tmp_path / "afile").write_text("x")
    with caplog.at_level(logging.WARNING, logger="zsseg"):
        TextFeatureCache(tmp_path / "afile").put("m", "p", {"cat": torch.ones(2)})
    assert "is a file, not a folder: point $ZSSEG_CACHE_DIR at a folder, or turn the text cache off" in caplog.text
    assert "Errno" not in caplog.text
    caplog.clear()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / FILE_NAME).write_bytes(b"not a database" * 100)
    cache = TextFeatureCache(tmp_path / "damaged")
    with caplog.at_level(logging.WARNING, logger="zsseg"):
        cache.put("m", "p", {"cat": torch.ones(2)})
    assert "was damaged" in caplog.text and "started a new one" in caplog.text
    assert torch.equal(cache.get("m", "p", ["cat"])["cat"], torch.ones(2))  # usable again, with no warning next time
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zsseg"):
        TextFeatureCache(tmp_path / "damaged").get("m", "p", ["cat"])
    assert caplog.text == ""
    assert (tmp_path / "damaged" / (FILE_NAME + ".damaged")).is_file()


def test_plurals(clip_dir, tmp_path):
    folder = _photos(tmp_path / "in", 1)
    result = run(["segment", str(folder), "--classes", "cat; dog", "--clip", str(clip_dir), "--max-size", "64",
                  "--max-proposals", "4", "--out", str(tmp_path / "out")])
    assert result.returncode == 0 and "zsseg: 1 image segmented, 0 failed" in result.stderr, result.stderr
    trained = run(["train", "prompts", "--dataset", "coco-stuff", "--data-root", str(DATA), "--config", "cpu", "--clip", str(clip_dir),
                   "--max-iters", "1", "--batch-size", "2", "--samples-per-class", "1", "--output-dir", str(tmp_path / "p")])
    assert trained.returncode == 0 and "zsseg: trained 1 step, last loss" in trained.stderr, trained.stderr


# --- 7. signals and folders ------------------------------------------------------------------------

def test_sigterm_stops_segment_like_ctrl_c(clip_dir, tmp_path):
    folder = _photos(tmp_path / "in", 40, size=(96, 128))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "zsseg", "segment", str(folder), "--classes", "cat; dog", "--clip", str(clip_dir),
                                "--max-proposals", "8", "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out.is_dir() and any(p.suffix == ".json" for p in out.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 143, err
    assert "Traceback" not in err and "zsseg: interrupted: " in err and "of 40 images segmented" in err
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file is left"
    written = sorted(p.stem for p in out.glob("*.json"))
    assert written and all((out / f"{stem}.png").is_file() and (out / f"{stem}_overlay.png").is_file() for stem in written)


def test_sigterm_stops_eval_with_a_line(clip_dir, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "zsseg", "eval", "--dataset", "coco-stuff", "--data-root", str(DATA),
                                "--clip", str(clip_dir), "--max-proposals", "4", "--max-size", "96", "--output", str(tmp_path / "s.json")],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "ZSSEG_PROGRESS_EVERY": "1"})
    for line in process.stderr:  # the first progress line: the run is under way
        if "of 100 images" in line:
            break
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 143 and "zsseg: interrupted (terminated)" in err and "Traceback" not in err, err
    assert not (tmp_path / "s.json").exists()


def test_folders_passed_over_are_counted(clip_dir, tmp_path):
    folder = _photos(tmp_path / "in", 1)
    (folder / "more").mkdir()
    (folder / "notes.txt").write_text("x")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    result = run(["segment", str(folder), "--classes", "cat; dog", "--clip", str(clip_dir), "--max-size", "64", "--max-proposals", "4",
                  "--out", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    assert ("in the folders, 1 subfolder, 1 dangling link, 1 file of another type passed over "
            "(folders are not searched recursively)") in result.stderr


def test_eval_output_folder_is_made_like_the_others(tmp_path):
    from test_safety import _small_ade

    _small_ade(tmp_path)
    out = tmp_path / "new" / "deeper" / "scores.json"
    status = main(["eval", "--dataset", "ade20k-150", "--data-root", str(tmp_path), "--oracle", "--proposals", "ground-truth", "--quiet",
                   "--output", str(out)])
    assert status == 0 and json.loads(out.read_text())["mIoU"] == 100.0


def test_pseudo_label_refuses_a_folder_with_a_foreign_file(clip_dir, tmp_path, capsys):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "notes.txt").write_text("mine")
    result = run_here(capsys, ["pseudo-label", "--dataset", "coco-stuff", "--data-root", str(DATA), "--proposals", "selective-search",
                               "--clip", str(clip_dir), "--limit", "1", "--output-dir", str(tmp_path / "labels")])
    assert "holds notes.txt, which zsseg did not write" in _one_line(result)


# --- what users expected ---------------------------------------------------------------------------

def test_skip_existing_resumes_a_run_and_notices_changed_settings(clip_dir, tmp_path):
    folder = _photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    common = ["segment", str(folder), "--clip", str(clip_dir), "--max-size", "64", "--max-proposals", "4", "--out", str(out)]
    first = run([*common, "--classes", "cat; dog"])
    assert first.returncode == 0, first.stderr
    (out / "p1.json").unlink()  # as if the run had stopped before p1's outputs were complete
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run([*common, "--classes", "cat; dog", "--skip-existing"])
    assert again.returncode == 0 and "1 image segmented, 2 already done (--skip-existing)" in again.stderr, again.stderr
    assert all(out.joinpath(name).stat().st_mtime_ns == stamp for name, stamp in stamps.items() if not name.startswith("p1"))
    config = json.loads((out / "p0.json").read_text())["config"]
    assert config["method"] == "two-stage" and config["proposals"]["max_proposals"] == 4 and config["clip"]["source"] == str(clip_dir)
    assert config["vocabulary"] == [["cat"], ["dog"]] and config["models"]["clip"]["source"] == str(clip_dir)
    other = run([*common, "--classes", "cat; dog; bird", "--skip-existing"])  # another vocabulary: nothing is up to date
    assert other.returncode == 0 and "3 images segmented, 0 failed" in other.stderr, other.stderr


def test_progress_lines_without_a_terminal(clip_dir, tmp_path):
    folder = _photos(tmp_path / "in", 3)
    result = run(["segment", str(folder), "--classes", "cat; dog", "--clip", str(clip_dir), "--max-size", "64", "--max-proposals", "4",
                  "--out", str(tmp_path / "out")], env={"ZSSEG_PROGRESS_EVERY": "2"})
    lines = [line for line in result.stderr.splitlines() if line.startswith("zsseg: segmenting:")]
    assert result.returncode == 0 and len(lines) == 1 and lines[0].startswith("zsseg: segmenting: 2 of 3 images"), result.stderr
