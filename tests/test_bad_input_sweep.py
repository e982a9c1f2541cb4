"""Every kind of bad input a user can give, through the command line: one clear line naming the
problem, a non-zero exit status, never a traceback, and nothing written. Unusual but valid
images are read correctly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from test_safety import _png_header_only, _small_ade
from zsseg.cli import main


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path, quality=95)
    return path


def _run(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.err


def _segment(capsys, clip, out, *inputs, classes=("--classes", "cat; dog"), extra=()):
    return _run(capsys, "segment", *inputs, *classes, "--clip", clip, "--out", out, "--max-size", "64", *extra)


# --- images: each bad one is one line naming it; the run goes on and exits 1 --------------------


def _corrupt(path):
    path.write_bytes(bytes(range(256)) * 4)


def _truncated(path):
    full = path.parent / "full.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("corrupt.jpg", _corrupt, "not an image file"),
        ("truncated.jpg", _truncated, "corrupt or truncated"),
        ("empty.png", lambda p: p.write_bytes(b""), "not an image file"),
        ("huge.png", lambda p: _png_header_only(p, 20000, 15000), "above the limit of 150,000,000 pixels"),
        ("folder.png", lambda p: p.mkdir(), "folder holds no images"),
    ],
)
def test_bad_images(clip_dir, tmp_path, capsys, photo, name, make, message):
    bad = tmp_path / name
    make(bad)
    out = tmp_path / "out"
    status, err = _segment(capsys, clip_dir, out, bad, photo)
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 2, err
    assert name in lines[0] and message in lines[0]
    assert lines[1].startswith("zsseg: 1 image segmented, 1 failed")
    assert sorted(p.name for p in out.iterdir()) == ["photo.json", "photo.png", "photo_overlay.png"]


def _sixteen_bit(path):
    Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)).save(path)


def _cmyk(path):
    Image.new("CMYK", (48, 40), (0, 128, 255, 10)).save(path)


def _palette(path):
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 48, 3), dtype=np.uint8)).convert("P").save(path)


def _rgba(path):
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 48, 4), dtype=np.uint8), "RGBA").save(path)


def _animated(path):
    frames = [Image.new("RGB", (48, 40), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated(path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: the upright image is 40 wide, 48 high
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(path, exif=exif)


@pytest.mark.parametrize(
    "name, make, size",
    [
        ("sixteen.png", _sixteen_bit, (48, 40)),
        ("cmyk.jpg", _cmyk, (48, 40)),
        ("palette.png", _palette, (48, 40)),
        ("rgba.png", _rgba, (48, 40)),
        ("animated.gif", _animated, (48, 40)),
        ("rotated.jpg", _exif_rotated, (40, 48)),
    ],
)
def test_unusual_images_are_read(clip_dir, tmp_path, capsys, name, make, size):
    make(tmp_path / name)
    status, err = _segment(capsys, clip_dir, tmp_path / "out", tmp_path / name)
    assert status == 0, err
    stem = name.rsplit(".", 1)[0]
    assert Image.open(tmp_path / "out" / f"{stem}.png").size == size
    assert json.loads((tmp_path / "out" / f"{stem}.json").read_text())["width"] == size[0]


# --- vocabularies, models, outputs: nothing can run, exit 2, one line, nothing created -----------


def _vocabulary_file(tmp_path, content):
    path = tmp_path / "classes.txt"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "classes, message",
    [
        (("--classes", " ; "), "the vocabulary is empty"),
        (("--classes", "cat; dog; cat"), "duplicate class name 'cat' (classes 1 and 3)"),
        (("--classes", "dog; cat, dog"), "duplicate class name 'dog' (classes 1 and 2)"),
        (("--classes", "cat; " + "very " * 80 + "long"), "too long"),
        (("--vocabulary-file", "{tmp}/missing.txt"), "vocabulary file not found"),
        (("--vocabulary-file", "{tmp}"), "vocabulary file is a folder"),
        (("--vocabulary-file", b"caf\xe9 cr\xe8me\n"), "not UTF-8 text"),  # Latin-1 (b"\xff\xfe" would be a UTF-16 BOM)
        (("--vocabulary-file", b"# only a comment\n\n"), "the vocabulary is empty"),
    ],
)
def test_bad_vocabularies(clip_dir, tmp_path, capsys, photo, classes, message):
    flag, value = classes
    if isinstance(value, bytes):
        value = _vocabulary_file(tmp_path, value)
    elif "{tmp}" in value:
        value = value.format(tmp=tmp_path)
    status, err = _segment(capsys, clip_dir, tmp_path / "out", photo, classes=(flag, value))
    assert status == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def _not_clip(folder):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))


def _no_weights(folder):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))


def _bad_json(folder):
    folder.mkdir()
    (folder / "config.json").write_text("{not json")


@pytest.mark.parametrize(
    "make, message",
    [
        (None, "CLIP folder not found"),
        (_not_clip, "holds a 'vit' model, not CLIP"),
        (_no_weights, "has a CLIP config.json but no weights"),
        (_bad_json, "cannot read"),
        (lambda p: p.write_text("x"), "is a file of another kind; give a folder"),
    ],
)
def test_bad_model_folders(tmp_path, capsys, photo, make, message):
    model = tmp_path / "models" / "clip"
    model.parent.mkdir()
    if make is not None:
        make(model)
    status, err = _segment(capsys, model, tmp_path / "out", photo)
    assert status == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_proposal_weights(clip_dir, tmp_path, capsys, photo):
    status, err = _segment(capsys, clip_dir, tmp_path / "out", photo, extra=("--proposals", "maskformer"))
    assert status == 2 and "need trained weights: --proposal-weights" in err
    status, err = _segment(capsys, clip_dir, tmp_path / "out", photo, extra=("--proposals", "maskformer", "--proposal-weights", tmp_path))
    assert status == 2 and "holds no proposals.safetensors" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "out, message",
    [
        ("{tmp}/file", "exists and is not a folder"),
        ("{tmp}/file/out", "is not writable: "),
        ("/proc/zsseg-out", "is not writable: "),
    ],
)
def test_unwritable_outputs(clip_dir, tmp_path, capsys, photo, out, message):
    (tmp_path / "file").write_text("mine")
    status, err = _segment(capsys, clip_dir, out.format(tmp=tmp_path), photo)
    assert status == 2 and message in err and err.count("\n") == 1, err
    assert (tmp_path / "file").read_text() == "mine"


def test_missing_input_only(clip_dir, tmp_path, capsys):
    status, err = _segment(capsys, clip_dir, tmp_path / "out", tmp_path / "nothing.png")
    assert status == 1 and "nothing.png: no such file or folder" in err and "0 images segmented, 1 failed" in err
    assert not (tmp_path / "out").exists()


# --- datasets: missing or broken files, named --------------------------------------------------


def _eval(capsys, root, *extra):
    return _run(capsys, "eval", "--dataset", "ade20k-150", "--data-root", root, "--oracle", "--proposals", "ground-truth", *extra)


def test_missing_dataset_files(tmp_path, capsys):
    status, err = _eval(capsys, tmp_path / "nowhere")
    assert status == 2 and "is not a folder" in err and err.count("\n") == 1
    status, err = _eval(capsys, tmp_path)
    assert status == 2 and "ade20k-150 (val) not found" in err and "validation is missing" in err and err.count("\n") == 1
    labels = _small_ade(tmp_path, count=2)
    (labels / "ADE_val_00000000.png").unlink()
    status, err = _eval(capsys, tmp_path)
    assert status == 2 and "ADE_val_00000000" in err and "--skip-missing-labels" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "label, message",
    [
        (np.full((32, 40), 200, np.uint8), "label values 200 are not defined by ade20k-150"),
        (np.ones((10, 10), np.uint8), "is 40x32 but its label map"),
        (np.zeros((32, 40, 3), np.uint8), "label map has mode RGB"),
    ],
)
def test_broken_label_maps(tmp_path, capsys, label, message):
    labels = _small_ade(tmp_path, count=2)
    Image.fromarray(label).save(labels / "ADE_val_00000001.png")
    status, err = _eval(capsys, tmp_path)
    assert status == 2 and message in err and err.count("\n") == 1, err


def test_eval_flags_and_dataset_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--dataset", "coco"])
    assert exit_info.value.code == 2 and "invalid choice: 'coco'" in capsys.readouterr().err
    status, err = _run(capsys, "eval", "--dataset", "ade20k-150", "--data-root", DATA, "--protocol", "zero-shot")
    assert status == 2 and "zero-shot protocol" in err


# --- the same, as a new user runs it: a separate process -------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["segment", "{photo}", "--classes", "cat", "--out", "{tmp}/out"], "offline"),  # the default hub CLIP, offline
        (["segment", "{photo}", "--classes", "cat; cat", "--out", "{tmp}/out"], "duplicate class name"),
        (["eval", "--dataset", "camvid", "--data-root", "{tmp}"], "camvid (val) not found"),
        (["train"], "say what to train"),
    ],
)
def test_one_line_in_a_fresh_process(tmp_path, photo, args, message):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    args = [a.format(photo=photo, tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "zsseg.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# --- found by a newcomer's sweep from a fresh clone ----------------------------------------------


def test_incomplete_or_damaged_clip_weights(clip_dir, tmp_path, capsys, photo):
    import shutil

    import torch
    from safetensors.torch import save_file

    for name, damage, message in [
        ("partial", lambda f: save_file({"x": torch.zeros(1)}, str(f)), "are incomplete: 78 tensor(s) missing"),
        ("garbage", lambda f: f.write_bytes(b"garbage"), "cannot load CLIP from"),
    ]:
        model = tmp_path / name
        shutil.copytree(clip_dir, model)
        damage(model / "model.safetensors")
        status, err = _segment(capsys, model, tmp_path / "out", photo)
        assert status == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_huge_foreign_png_in_the_output_folder(clip_dir, tmp_path, capsys, photo):
    out = tmp_path / "out"
    out.mkdir()
    _png_header_only(out / "photo.png", 20000, 20000)
    status, err = _segment(capsys, clip_dir, out, photo)
    assert status == 2 and "photo.png exists and was not written by zsseg" in err and err.count("\n") == 1
    folder = tmp_path / "in"
    folder.mkdir()
    _png_header_only(folder / "huge.png", 20000, 20000)
    status, err = _segment(capsys, clip_dir, tmp_path / "out2", folder)
    assert status == 1 and "above the limit" in err


def test_file_names_and_classes_that_are_not_utf8(clip_dir, tmp_path, capsys, photo):
    folder = tmp_path / "in"
    folder.mkdir()
    odd = folder / os.fsdecode(b"bad\xff.jpg")
    odd.write_bytes(photo.read_bytes())
    status, err = _segment(capsys, clip_dir, tmp_path / "out", folder)
    assert status == 0, err
    record = json.loads((tmp_path / "out" / os.fsdecode(b"bad\xff.json")).read_bytes().decode("utf-8"))
    assert record["image"] == str(odd)
    status, err = _segment(capsys, clip_dir, tmp_path / "out2", photo, classes=("--classes", os.fsdecode(b"cat; d\xffg")))
    assert status == 2 and "not valid UTF-8" in err and err.count("\n") == 1
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_output_folder_that_is_a_broken_link(clip_dir, tmp_path, capsys, photo, kind):
    link = tmp_path / "out"
    if kind == "dangling":
        link.symlink_to(tmp_path / "nowhere")
    else:
        (tmp_path / "other").symlink_to(link)
        link.symlink_to(tmp_path / "other")
    status, err = _segment(capsys, clip_dir, link, photo)
    assert status == 2 and "is a symbolic link to nothing" in err and err.count("\n") == 1


def test_ensemble_weight_without_the_network(clip_dir, tmp_path, capsys, photo):
    status, err = _segment(capsys, clip_dir, tmp_path / "out", photo, extra=("--ensemble-weight", "0.5"))
    assert status == 2 and "--ensemble-weight is for maskformer proposals" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", [["vocabularies"], ["--version"]])
def test_standard_output_that_cannot_be_written(command):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "zsseg.cli", *command], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot write to standard output" in proc.stderr and "Traceback" not in proc.stderr
