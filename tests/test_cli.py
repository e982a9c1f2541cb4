"""The `zsseg segment` command end to end on a real image, and every bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from zsseg.cli import main


def run(args):
    return subprocess.run([sys.executable, "-m", "zsseg.cli", *args], capture_output=True, text=True, timeout=600)


def test_segment_real_coco_image(clip_dir, coco_val, tmp_path):
    image_path = coco_val[0][0]
    out = tmp_path / "out"
    proc = run(["segment", str(image_path), "--classes", "person; dog; sofa, couch; wall; grass", "--clip", str(clip_dir),
                "--max-size", "320", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    width, height = Image.open(image_path).size
    stem = image_path.stem
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{stem}.png", f"{stem}_overlay.png", f"{stem}.json"])

    labels_png = Image.open(out / f"{stem}.png")
    assert labels_png.mode == "P" and labels_png.size == (width, height)
    labels = np.array(labels_png)
    overlay = Image.open(out / f"{stem}_overlay.png")
    assert overlay.height >= height and overlay.width > width  # legend panel on the right

    record = json.loads((out / f"{stem}.json").read_text())
    assert record["vocabulary"] == ["person", "dog", "sofa, couch", "wall", "grass"]
    assert (record["height"], record["width"]) == (height, width)
    total = record["unlabeled_area"]
    assert record["classes"]
    for entry in record["classes"]:
        rle = {"size": entry["rle"]["size"], "counts": entry["rle"]["counts"].encode("ascii")}
        decoded = mask_utils.decode(rle)
        assert decoded.shape == (height, width)
        assert np.array_equal(decoded.astype(bool), labels == entry["index"])
        assert entry["area"] == decoded.sum() and entry["name"] == record["vocabulary"][entry["index"]]
        total += entry["area"]
    assert total == height * width


def _image(path, size=(48, 40)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _segment(clip_dir, out, *inputs, classes="cat; dog"):
    return main(["segment", *map(str, inputs), "--classes", classes, "--clip", str(clip_dir), "--out", str(out), "--max-size", "64"])


def test_folder_run_continues_past_bad_images(clip_dir, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    _image(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not picked up from a folder")
    out = tmp_path / "out"
    assert _segment(clip_dir, out, folder, tmp_path / "missing.png") == 1
    err = capsys.readouterr().err
    assert "1 image segmented, 2 failed" in err and "broken.jpg" in err and "missing.png: no such file" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.png", "good_overlay.png"]  # no temporaries


def test_explicit_non_image_file(clip_dir, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert _segment(clip_dir, tmp_path / "out", notes) == 1
    assert "not an image" in capsys.readouterr().err


@pytest.mark.parametrize(
    "classes,message",
    [(" ; ", "vocabulary is empty"), ("cat; dog; cat", "duplicate class name"), ("cat; " + "very " * 80 + "long", "too long")],
)
def test_bad_vocabularies(clip_dir, tmp_path, capsys, classes, message):
    assert _segment(clip_dir, tmp_path / "out", _image(tmp_path / "a.png"), classes=classes) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "out" / "a.png").exists()


def test_unwritable_output(clip_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _segment(clip_dir, blocker / "out", _image(tmp_path / "a.png")) == 2
    assert "not writable" in capsys.readouterr().err


def test_model_folder_that_is_not_clip(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert _segment(tmp_path / "model", tmp_path / "out", _image(tmp_path / "a.png")) == 2
    assert "not CLIP" in capsys.readouterr().err


def test_outputs_that_would_collide(clip_dir, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    assert _segment(clip_dir, tmp_path / "out", _image(tmp_path / "x" / "a.png"), _image(tmp_path / "y" / "a.jpg")) == 2
    assert "would both write a.png" in capsys.readouterr().err


def test_vocabulary_file_and_preset(clip_dir, tmp_path):
    image = _image(tmp_path / "a.png")
    vocab = tmp_path / "classes.txt"
    vocab.write_text("cat\nsofa, couch\n")
    args = ["segment", str(image), "--clip", str(clip_dir), "--max-size", "64"]
    assert main(args + ["--vocabulary-file", str(vocab), "--out", str(tmp_path / "o1")]) == 0
    assert json.loads((tmp_path / "o1" / "a.json").read_text())["vocabulary"] == ["cat", "sofa, couch"]
    assert main(args + ["--vocabulary", "ade20k-847", "--prompt", "single", "--out", str(tmp_path / "o2")]) == 0
    assert Image.open(tmp_path / "o2" / "a.png").mode in ("I;16", "I")  # > 255 classes: 16-bit labels
    assert main(args + ["--vocabulary-file", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o3")]) == 2


def test_missing_vocabulary_is_an_error_naming_every_way_to_give_it(tmp_path, capsys):
    # not a usage error of the parser: a --config file may record the vocabulary
    assert main(["segment", "x.png", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--classes, --vocabulary or --vocabulary-file" in err and "--config" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unreachable_hub_model_in_subprocess(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    _image(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, "-m", "zsseg.cli", "segment", str(tmp_path / "a.png"), "--classes", "cat",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "offline" in proc.stderr and "--local-dir clip-model" in proc.stderr and "(--clip clip-model)" in proc.stderr
