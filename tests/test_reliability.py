"""Issue 33: what a new user still broke. Every RLE is checked before pycocotools decodes it;
zsseg removes only files it can prove it wrote; an earlier output counts as done only when it
decodes whole; damaged model folders, tokenizers and device strings are one line; sizes are
read from headers before anything is decompressed."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from zsseg import read_masks
from zsseg.errors import ZssegError
from zsseg.outputs.writers import SOFTWARE

H, W = 30, 40


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _square():
    mask = np.zeros((H, W), dtype=bool)
    mask[5:15, 10:30] = True
    return mask


# The four JSON layouts that hold RLEs, each around one RLE object.
LAYOUTS = {
    "coco": lambda rle: {"images": [{"id": 1, "height": H, "width": W}], "annotations": [{"id": 7, "image_id": 1, "segmentation": rle}]},
    "sam": lambda rle: [{"segmentation": rle, "area": 1}],
    "zsseg": lambda rle: {"software": SOFTWARE, "height": H, "width": W, "classes": [{"index": 0, "name": "cat", "rle": rle}]},
    "zsseg-masks": lambda rle: {"software": SOFTWARE, "masks": [{"id": 3, "rle": rle}]},
}

GOOD = _rle(_square())["counts"]
BAD_RLES = {
    "one run": ("1", "its runs cover 1 pixels, not 30x40 = 1200"),
    "two runs": ("11", "its runs cover 2 pixels"),
    "empty string": ("", "its runs cover 0 pixels"),
    "zero": ("0", "its runs cover 0 pixels"),
    "one run too many": (GOOD + "1", "not 30x40 = 1200"),
    "cut short": (GOOD[:-1], "invalid RLE"),
    "ends mid-value": (GOOD + "`", "ends in the middle of a run length"),
    "character above 'o'": ("~" + GOOD, "outside COCO's characters"),
    "character below '0'": ("!" + GOOD, "outside COCO's characters"),
    "NUL character": (GOOD[:2] + "\x00" + GOOD[2:], "outside COCO's characters"),
    "value of 7 characters": ("oooooo0", "more than 6 characters"),
    "negative first run": ("O" + GOOD[1:], "negative run length"),
    "negative later run": (GOOD[:2] + "O" + GOOD[3:], "negative run length"),
    "not ASCII": ("é" + GOOD, "not ASCII"),
    "list short": ([10, 20], "its runs cover 30 pixels"),
    "list negative": ([-5, 1205], "\"counts\" must be a string, or a list"),
    "list of floats": ([600.0, 600.0], "\"counts\" must be a string, or a list"),
    "list of booleans": ([True, False], "\"counts\" must be a string, or a list"),
    "list all background": ([1200], "is empty"),
    "string all background": (_rle(np.zeros((H, W), bool))["counts"], "is empty"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("case", sorted(BAD_RLES))
def test_every_rle_is_checked_before_it_is_decoded(tmp_path, monkeypatch, layout, case):
    counts, message = BAD_RLES[case]
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(LAYOUTS[layout]({"size": [H, W], "counts": counts})))
    decoded = []
    real_decode = mask_utils.decode
    monkeypatch.setattr(mask_utils, "decode", lambda rle: decoded.append(rle) or real_decode(rle))
    with pytest.raises(ZssegError) as error:
        read_masks(path, H, W)
    assert message in str(error.value) and "\n" not in str(error.value) and str(path) in str(error.value)
    assert not decoded, "pycocotools decoded an RLE that zsseg had not checked"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_well_formed_rles_read_the_same_in_every_layout(tmp_path, layout):
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(LAYOUTS[layout](_rle(_square()))))
    masks = read_masks(path, H, W)
    assert len(masks) == 1 and np.array_equal(masks.mask(0), _square()) and masks.areas() == [200]


def test_compressed_runs_match_pycocotools_on_random_masks():
    from zsseg.data.mask_files import compressed_runs

    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = rng.integers(1, 120, 2)
        mask = rng.random((height, width)) < rng.random()
        runs = compressed_runs(mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))["counts"], "m")
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
        assert np.array_equal(flat, mask.ravel(order="F"))


# --- .npz: members checked from their headers before their data is read --------------------------


def _zip(path, members, method=None):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if method is None else method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npy_bytes(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _one_mask():
    return _square()[None]


@pytest.mark.parametrize("members, message", [
    ({"masks.npy": __import__("pickle").dumps([1, 2])}, "holds Python objects (pickled)"),
    ({"masks": _npy_bytes(_square()[None])}, "its member 'masks' is not a NumPy array"),
    ({"masks": b"\x93NUMPY" + b"x" * 50}, "its member 'masks' is not a NumPy array"),
    ({"masks.npy": _npy_bytes(_square()[None])[:-7]}, "holds 1,193 bytes of data: the file is damaged"),
    ({"masks.npy": _npy_bytes(np.array([[[{}]]], dtype=object))}, "pickled"),
    ({"masks.npy": b"\x93NUMPY\x09\x00" + b"\x00" * 20}, "format version (9, 0)"),
    ({"masks.npy": _npy_bytes(_square()[None]), "ids.npy": _npy_bytes(np.array([1, 2]))}, "2 ids for 1 masks"),
    ({"masks.npy": _npy_bytes(_square()[None]), "ids.npy": _npy_bytes(np.array([[1]]))}, "'ids' must be a 1-D array"),
    ({"masks.npy": _npy_bytes(_square()[None]), "ids": b"1"}, "its member 'ids' is not a NumPy array"),
    ({}, "holds no arrays"),
    ({"a.npy": _npy_bytes(_square()[None]), "b.npy": _npy_bytes(_square()[None])}, "holds 2 arrays (a, b)"),
])
def test_npz_members_that_are_not_arrays_are_one_line(tmp_path, members, message):
    path = _zip(tmp_path / "m.npz", members)
    with pytest.raises(ZssegError) as error:
        read_masks(path, H, W)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_npz_bomb_is_refused_from_its_header(tmp_path):
    import tracemalloc

    np.savez_compressed(tmp_path / "bomb.npz", masks=np.zeros((200, 1000, 1000), dtype=bool))  # 200 MB in 200 KB
    tracemalloc.start()
    try:
        with pytest.raises(ZssegError, match="the masks are 1000x1000 but the image is 40x30"):
            read_masks(tmp_path / "bomb.npz", H, W)
        with pytest.raises(ZssegError, match="holds 200 masks, more than the limit of 10"):
            read_masks(tmp_path / "bomb.npz", 1000, 1000, max_masks=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"{peak:,} bytes allocated to refuse it"


def test_npz_masks_are_read_one_at_a_time_in_any_compression(tmp_path):
    import zipfile

    masks = np.stack([_square(), ~_square()])
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        path = _zip(tmp_path / f"m{method}.npz", {"masks.npy": _npy_bytes(masks), "ids.npy": _npy_bytes(np.array(["a", "b"]))}, method)
        read = read_masks(path, H, W)
        assert read.ids == ["a", "b"] and np.array_equal(read.masks, masks)
    np.savez(tmp_path / "fortran.npz", masks=np.asfortranarray(masks.astype(np.uint8)))
    assert np.array_equal(read_masks(tmp_path / "fortran.npz", H, W).masks, masks)


# --- a photo is not an instance-id map -------------------------------------------------------------


def test_a_greyscale_photo_is_not_read_as_an_instance_id_map(coco_val, tmp_path):
    from PIL import Image

    image, label = coco_val[0]
    grey = tmp_path / "grey.png"
    Image.open(image).convert("L").save(grey)
    width, height = Image.open(image).size
    with pytest.raises(ZssegError, match="does not look like an instance-id map but like a photo"):
        read_masks(grey, height, width)
    # A real label map cut into quadrants (ids = class x 4 + quadrant): over 16 solid regions.
    classes = np.asarray(Image.open(label)).astype(np.uint16)
    rows, cols = np.indices(classes.shape)
    values = np.where(classes == 255, 0, classes * 4 + 2 * (rows > height // 2) + (cols > width // 2) + 1).astype(np.uint16)
    assert len(np.unique(values)) > 16
    Image.fromarray(values).save(tmp_path / "ids.png")
    assert len(read_masks(tmp_path / "ids.png", height, width)) == len(np.unique(values[values > 0]))


def test_many_small_solid_instances_are_an_id_map(tmp_path):
    from PIL import Image

    ids = np.zeros((120, 160), dtype=np.uint16)
    for k in range(300):  # 300 squares of 4x4 to 8x8 pixels on a grid
        row, col = divmod(k, 20)
        size = 4 + k % 5
        ids[row * 8:row * 8 + size, col * 8:col * 8 + size] = k + 1
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert len(read_masks(tmp_path / "ids.png", 120, 160)) == 300


# --- model folders, tokenizers, devices, PyTorch files: whatever they hold, one line ---------------


@pytest.fixture
def photo(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def _one_line_status_2(capsys, args, message):
    from zsseg.cli import main

    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1 and err.startswith("zsseg: error: "), err
    return err


def _segment_args(photo, clip, out, *extra):
    """A segment run that encodes its text (no text cache), as a machine's first run does: a
    CLIP's tokenizer is read only then."""
    return ["segment", photo, "--classes", "cat; dog", "--clip", clip, "--out", out, "--max-size", "64", "--no-text-cache", *extra]


def _copy_clip(clip_dir, tmp_path, name="clip"):
    import shutil

    folder = tmp_path / name
    shutil.copytree(clip_dir, folder)
    return folder


def _edit_config(folder, tower, key, value):
    config = json.loads((folder / "config.json").read_text())
    (config[tower] if tower else config)[key] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("tower, key, value, message", [
    ("text_config", "hidden_size", -5, "hidden_size must be a positive integer, not -5"),
    ("vision_config", "patch_size", 0, "cannot load CLIP from"),
    ("text_config", "num_attention_heads", 0, "cannot load CLIP from"),
    ("text_config", "hidden_act", "nope", "hidden_act 'nope' is not one CLIP uses"),
    ("vision_config", "num_channels", "x", "num_channels must be positive integers"),
    ("text_config", "intermediate_size", 10**7, "its config.json does not describe its weights"),
    ("vision_config", "image_size", 10**6, "position_embedding.weight is [50, 64] in the weights"),
    ("text_config", "num_hidden_layers", 300, "are incomplete: 4768 tensor(s) missing"),
    (None, "projection_dim", 10**6, "visual_projection.weight"),
    ("text_config", "eos_token_id", 7, "end-of-text id is 49407, not CLIP's 7"),
])
def test_clip_folders_with_nonsense_config_values(clip_dir, tmp_path, capsys, photo, tower, key, value, message):
    folder = _copy_clip(clip_dir, tmp_path)
    _edit_config(folder, tower, key, value)
    _one_line_status_2(capsys, _segment_args(photo, folder, tmp_path / "out"), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    ({"image_mean": [0.5, 0.5, 0.5], "image_std": [0, 0, 0]}, "every image_std above 0"),
    ({"image_mean": ["a", "b", "c"], "image_std": [1, 1, 1]}, "must be 3 finite numbers each"),
    ({"image_mean": [0.5, 0.5], "image_std": [1, 1]}, "must be 3 finite numbers each"),
])
def test_clip_folders_with_nonsense_preprocessing(clip_dir, tmp_path, capsys, photo, content, message):
    folder = _copy_clip(clip_dir, tmp_path)
    (folder / "preprocessor_config.json").write_text(json.dumps(content))
    _one_line_status_2(capsys, _segment_args(photo, folder, tmp_path / "out"), message)


def _tokenizer(tmp_path, **files):
    from conftest import TOKENIZER

    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for name, content in files.items():
        name = name.replace("_", ".")  # vocab_json: vocab.json
        target = folder / name
        if content is None:
            target.write_bytes((TOKENIZER / name).read_bytes())
        else:
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


@pytest.mark.parametrize("files, message", [
    (dict(vocab_json="{\"a\": 1}", merges_txt=None), "Error while initializing BPE: Token `i` out of vocabulary"),
    (dict(vocab_json="{nope", merges_txt=None), "Error while initializing BPE"),
    (dict(vocab_json="", merges_txt=None), "Error while initializing BPE"),
    (dict(vocab_json=None, merges_txt=""), "splits 'photo' into 5 tokens"),
    (dict(vocab_json=None, merges_txt="#version\nzz yy qq\n"), "Merges text file invalid"),
    (dict(vocab_json="{\"a\": 0, \"b\": 1, \"ab\": 2}", merges_txt="#version: 0.2\na b\n"), "is not CLIP's BPE tokenizer"),
    (dict(tokenizer_json="{}"), "KeyError: 'added_tokens'"),
    (dict(tokenizer_json="{nope"), "cannot load the CLIP tokenizer"),
])
def test_broken_tokenizer_folders(clip_dir, tmp_path, capsys, photo, files, message):
    folder = _tokenizer(tmp_path, **files)
    _one_line_status_2(capsys, _segment_args(photo, clip_dir, tmp_path / "out", "--tokenizer", folder), message)
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_is_read_only_when_text_is_encoded(clip_dir, tmp_path, capsys, photo, monkeypatch):
    """Text features found in the cache need no tokenizer, so a run that finds them all does not
    read it (transformers' tokenizers cost 0.75 CPU-s to import); new class names are encoded with
    it. Another tokenizer is another key (features cached with one are never another's), and a
    broken one is refused before any image."""
    from zsseg.cli import main
    from zsseg.models import openai_clip

    monkeypatch.setenv("ZSSEG_CACHE_DIR", str(tmp_path / "cache"))
    reads = []
    read = openai_clip._load_tokenizer
    monkeypatch.setattr(openai_clip, "_load_tokenizer", lambda source: reads.append(source) or read(source))
    args = ["segment", photo, "--clip", clip_dir, "--max-size", "64"]
    assert main([str(a) for a in [*args, "--classes", "cat; dog", "--out", tmp_path / "first"]]) == 0
    assert len(reads) == 1
    assert main([str(a) for a in [*args, "--classes", "cat; dog", "--out", tmp_path / "cached"]]) == 0
    assert len(reads) == 1  # every feature cached: the tokenizer is not read
    assert main([str(a) for a in [*args, "--classes", "cat; bird", "--out", tmp_path / "bird"]]) == 0
    assert len(reads) == 2  # a new name: read, for it only
    capsys.readouterr()
    broken = _tokenizer(tmp_path, vocab_json=None, merges_txt="")  # splits 'photo': not CLIP's merges
    _one_line_status_2(capsys, [*args, "--tokenizer", broken, "--classes", "cat; dog", "--out", tmp_path / "new"],
                       "splits 'photo' into 5 tokens")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("device, message", [
    ("meta", "device 'meta' is not one zsseg runs on"),
    ("mps", "device 'mps' is not one zsseg runs on"),
    ("xla", "not one zsseg runs on"),
    ("hpu", "not one zsseg runs on"),
    ("privateuseone", "not one zsseg runs on"),
    ("mkldnn", "not one zsseg runs on"),
    ("CPU", "device 'CPU' is not a device"),
    ("cuda:x", "is not a device"),
    ("cpu:-1", "is not a device"),
    ("", "Device string must not be empty"),
    ("cuda:0:1", "is not a device"),
])
@pytest.mark.parametrize("command", ["segment", "classify"])
def test_devices_zsseg_does_not_run_on(clip_dir, tmp_path, capsys, photo, command, device, message):
    if command == "segment":
        args = _segment_args(photo, clip_dir, tmp_path / "out", "--device", device)
    else:
        np.save(tmp_path / "m.npy", np.ones((1, 40, 48), dtype=bool))
        args = ["classify", photo, "--masks", tmp_path / "m.npy", "--classes", "cat; dog", "--clip", clip_dir,
                "--out", tmp_path / "out", "--device", device]
    _one_line_status_2(capsys, args, message)
    assert not (tmp_path / "out").exists()


def _torch_file(kind):
    import io
    import pickle

    import torch

    buffer = io.BytesIO()
    if kind == "random":
        return np.random.default_rng(0).bytes(4000)
    if kind == "empty":
        return b""
    if kind == "text":
        return b"hello, not weights\n" * 10
    if kind == "protocol 5":
        return pickle.dumps({"a": [1, 2]}, protocol=5)
    if kind == "objects":
        torch.save({"w": torch.zeros(2), "f": print}, buffer)
    elif kind == "half a zip":
        torch.save({"w": torch.zeros(100)}, buffer)
        return buffer.getvalue()[: len(buffer.getvalue()) // 2]
    return buffer.getvalue()


@pytest.mark.parametrize("kind, message", [
    ("random", "is not a PyTorch file (neither the zip archive"),
    ("empty", "is empty, not a PyTorch file"),
    ("text", "is not a PyTorch file"),
    ("protocol 5", "is damaged or not a PyTorch file: it cannot be read as tensors (Unsupported operand 149)"),
    ("objects", "holds objects other than tensors (print), which zsseg does not unpickle"),
    ("half a zip", "is damaged or not a PyTorch file"),
])
def test_pytorch_files_that_are_not_weights(tmp_path, capsys, photo, kind, message):
    weights = tmp_path / "clip.pt"
    weights.write_bytes(_torch_file(kind))
    err = _one_line_status_2(capsys, _segment_args(photo, weights, tmp_path / "out"), message)
    assert "Warning" not in err and "Re-running" not in err


# --- earlier outputs: counted as done only when whole; a torn one of zsseg's is written again -----


@pytest.fixture
def segmented(clip_dir, tmp_path, capsys, photo):
    """An output folder that `zsseg segment` wrote, and its files' bytes."""
    from zsseg.cli import main

    out = tmp_path / "out"
    assert main([str(a) for a in _segment_args(photo, clip_dir, out)]) == 0
    capsys.readouterr()
    return out, {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.parametrize("name", ["photo.png", "photo_overlay.png", "photo.json"])
@pytest.mark.parametrize("keep", [0, 10, 40, 70, "half", "all but 5"])
def test_skip_existing_writes_a_torn_output_again(clip_dir, capsys, photo, segmented, name, keep):
    from zsseg.cli import main

    out, original = segmented
    data = original[name]
    keep = {"half": len(data) // 2, "all but 5": len(data) - 5}.get(keep, keep)
    (out / name).write_bytes(data[:keep])
    assert main([str(a) for a in _segment_args(photo, clip_dir, out, "--skip-existing")]) == 0
    assert "1 image segmented, 0 failed" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == original  # the same bytes: same labels on every run


def test_skip_existing_passes_over_whole_outputs(clip_dir, capsys, photo, segmented):
    from zsseg.cli import main

    out, original = segmented
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([str(a) for a in _segment_args(photo, clip_dir, out, "--skip-existing")]) == 0
    assert "0 images segmented, 1 already done" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def _user_png(path):
    from PIL import Image

    Image.fromarray(np.zeros((40, 48), np.uint8)).save(path, format="PNG")


@pytest.mark.parametrize("name", ["photo.png", "photo_overlay.png", "photo.json"])
@pytest.mark.parametrize("content", [b"", b"mine", b"\x89PNG\r\n\x1a\n", b'{"software": "mine"}', "png"])
def test_a_user_file_named_like_an_output_is_never_replaced(clip_dir, tmp_path, capsys, photo, name, content):
    out = tmp_path / "out"
    out.mkdir()
    if content == "png":
        _user_png(out / name)
    else:
        (out / name).write_bytes(content)
    before = (out / name).read_bytes()
    for extra in ((), ("--skip-existing",)):
        _one_line_status_2(capsys, _segment_args(photo, clip_dir, out, *extra), f"{name} exists and was not written by zsseg")
    assert (out / name).read_bytes() == before and [p.name for p in out.iterdir()] == [name]


@pytest.mark.parametrize("name", ["photo.png", "photo_overlay.png", "photo.json"])
def test_a_whole_user_file_put_in_place_of_an_output_is_never_replaced(clip_dir, capsys, photo, segmented, name):
    out, _ = segmented
    if name.endswith(".png"):
        _user_png(out / name)
    else:
        (out / name).write_text('{"my": "notes"}')
    before = (out / name).read_bytes()
    _one_line_status_2(capsys, _segment_args(photo, clip_dir, out, "--skip-existing"), f"{name} exists and was not written by zsseg")
    assert (out / name).read_bytes() == before


def test_stale_temporaries_are_removed_only_when_zsseg_wrote_them(clip_dir, capsys, photo, segmented):
    from zsseg.cli import main

    out, original = segmented
    theirs = {".photo.png.abcdefgh.tmp": b"a user's file", ".photo.json.12345678.tmp": b"", ".photo_overlay.png.zzzzzzzz.tmp": b"\x89PNG"}
    for name, data in theirs.items():
        (out / name).write_bytes(data)
    ours = out / ".photo.png.k3j4h5g6.tmp"
    ours.write_bytes(original["photo.png"][:100])  # a temporary cut short by a kill: zsseg's mark is in it
    assert main([str(a) for a in _segment_args(photo, clip_dir, out)]) == 0
    assert not ours.exists()
    assert {name: (out / name).read_bytes() for name in theirs} == theirs


def test_outputs_are_on_the_disk_before_they_are_renamed(tmp_path, monkeypatch):
    import os

    from zsseg.outputs import writers

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(writers.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(writers.os, "replace", lambda a, b: events.append(f"replace {Path(b).name}") or real_replace(a, b))
    writers.write_outputs(tmp_path, "x", np.zeros((8, 10, 3), np.uint8), np.zeros((8, 10), np.int64), ["cat"], "x.jpg")
    renames = [i for i, e in enumerate(events) if e.startswith("replace")]
    assert len(renames) == 3 and events[:3] == ["fsync"] * 3 and events[renames[-1] + 1:] == ["fsync"]  # the folder too


# --- training: a file is removed only when zsseg can prove it wrote it ----------------------------


def _train(clip_dir, out, *extra):
    from conftest import DATA
    from zsseg.cli import main

    return main(["train", "proposals", "--dataset", "coco-stuff", "--data-root", str(DATA), "--config", "tiny", "--clip",
                 str(clip_dir), "--batch-size", "2", "--crop-size", "128", "--log-every", "1", "--output-dir", str(out),
                 "--max-iters", "3", "--checkpoint-every", "1", *map(str, extra)])


def _user_checkpoint(kind):
    import io

    import torch

    if kind == "bytes":
        return b"my own notes, named like a checkpoint"
    buffer = io.BytesIO()
    torch.save({"step": 1, "model": {"w": torch.zeros(2)}} if kind == "torch" else {"w": torch.zeros(2)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("kind, message", [
    ("bytes", "cannot read checkpoint: "),
    ("torch", "is named like a checkpoint of zsseg but zsseg did not write it"),
    ("state", "is named like a checkpoint of zsseg but zsseg did not write it"),
])
def test_a_users_file_named_like_a_checkpoint_is_never_removed(clip_dir, tmp_path, capsys, kind, message):
    out = tmp_path / "run"
    assert _train(clip_dir, out) == 0  # wrote checkpoints 1, 2, 3 and kept 2 and 3
    capsys.readouterr()
    mine = out / "checkpoint-0000001.pt"
    mine.write_bytes(_user_checkpoint(kind))
    before = mine.read_bytes()
    status = _train(clip_dir, out)  # the resume, which deleted the user's file
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1 and "left untouched" in err, err
    assert mine.read_bytes() == before
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-000000{k}.pt" for k in (1, 2, 3)]


def test_pruning_passes_over_files_it_cannot_prove_are_its_own(tmp_path):
    import torch

    from zsseg.training.loop import _save_checkpoint

    theirs = tmp_path / "checkpoint-0000000.pt"
    theirs.write_bytes(b"not zsseg's")
    for step in (1, 2, 3):
        _save_checkpoint(tmp_path, {"step": step, "model": {"w": torch.full((2,), float(step))}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0000000.pt", "checkpoint-0000002.pt", "checkpoint-0000003.pt"]
    assert theirs.read_bytes() == b"not zsseg's"
    assert torch.load(tmp_path / "checkpoint-0000003.pt", weights_only=True)["software"] == SOFTWARE


def test_a_users_log_beside_zsseg_checkpoints_is_never_rewritten(clip_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(clip_dir, out, "--max-iters", "2") == 0
    capsys.readouterr()
    (out / "log.jsonl").write_text("my own log\n")
    status = _train(clip_dir, out, "--max-iters", "2")
    assert status == 2 and "log.jsonl exists and was not written by zsseg" in capsys.readouterr().err
    assert (out / "log.jsonl").read_text() == "my own log\n"


# --- what was unclear ------------------------------------------------------------------------------


def test_listings_line_up_their_columns(capsys):
    from zsseg.cli import main
    from zsseg.data.datasets import DATASETS
    from zsseg.data.vocabulary import PRESETS

    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len({line.index(spec.description) for line, spec in zip(lines, DATASETS.values())}) == 1, lines  # voc's long splits too
    assert main(["vocabularies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len({line.index(description) for line, description in zip(lines, PRESETS.values())}) == 1, lines


def test_tiny_clip_script_prints_only_its_folder(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "tiny_clip.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "tiny-clip")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == f"{tmp_path / 'tiny-clip'}\n" and done.stderr == "", done.stderr
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().split()
    assert "/tiny-clip/" in ignored  # where the README's first steps save it


def _coco(tmp_path, image_ids):
    annotations = [{"id": 10 + k, "image_id": image_id, "segmentation": _rle(_square() if k % 2 == 0 else ~_square())}
                   for k, image_id in enumerate(image_ids)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"annotations": annotations}))
    return path


def test_coco_image_ids_of_both_types_are_told_apart(tmp_path):
    from zsseg.cli.classify import image_id

    path = _coco(tmp_path, ["1", 1])
    with pytest.raises(ZssegError, match=r'holds annotations of 2 images; choose one with image_id \(ids: 1, "1"\)'):
        read_masks(path, H, W)
    assert read_masks(path, H, W, image_id=1).ids == [11] and read_masks(path, H, W, image_id="1").ids == [10]
    assert image_id("1") == 1 and image_id('"1"') == "1" and image_id("abc") == "abc"
    only_strings = _coco(tmp_path, ["7", "7"])
    masks = read_masks(only_strings, H, W, image_id=image_id("7"))  # typed as a number, the file's id is a string
    assert masks.ids == [10, 11] and masks.image_id == "7" and 'image "7"' in masks.describe()
    with pytest.raises(ZssegError, match='no annotations for image id "8"'):
        read_masks(only_strings, H, W, image_id="8")


def test_classify_shows_progress_over_many_masks(clip, monkeypatch, capsys):
    from zsseg import MaskSet, RegionClassifier, classify_masks

    monkeypatch.setenv("ZSSEG_PROGRESS_EVERY", "50")
    masks = np.zeros((120, 32, 40), dtype=bool)
    for k in range(120):
        masks[k, (k % 8) * 4:(k % 8) * 4 + 4, (k // 8) % 10 * 4:(k // 8) % 10 * 4 + 4] = True
    image = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    classify_masks(RegionClassifier(clip, prompt="single"), image, MaskSet.from_array(masks), "cat; dog", progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == ["zsseg: classifying: 50 of 120 masks", "zsseg: classifying: 100 of 120 masks"]


def test_ctrl_c_does_not_wait_for_the_image_being_prepared(clip_dir, tmp_path, photo):
    """After Ctrl-C the `zsseg` command ends at once, even while the next image is still being
    prepared (here: forever); nothing of that image is written."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import sys, time\n"
        "from zsseg.segmenter import Segmenter\n"
        "real = Segmenter.prepare_image\n"
        "seen = []\n"
        "def prepare(self, image):\n"
        "    seen.append(1)\n"
        "    if len(seen) == 2:\n"
        "        print('preparing the second', file=sys.stderr, flush=True)\n"
        "        time.sleep(3600)\n"
        "    return real(self, image)\n"
        "Segmenter.prepare_image = prepare\n"
        "from zsseg.console import main\n"
        "sys.argv = ['zsseg', *sys.argv[1:]]\n"
        "sys.exit(main())\n"
    )
    second = tmp_path / "second.jpg"
    second.write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    args = _segment_args(photo, clip_dir, out)
    args.insert(2, second)
    # As from a terminal, where Ctrl-C reaches it: a suite started in the background by a shell
    # without job control (`./.ci/run &` in a script) has SIGINT ignored, and children inherit
    # that, so the test's "Ctrl-C" would be lost (and the command would wait for the hour).
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = ""
    while "preparing the second" not in err:
        line = proc.stderr.readline()
        assert line, f"the command ended before the second image was prepared: {err}"
        err += line
    deadline = time.monotonic() + 120
    while not (out / "photo.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        rest = proc.communicate(timeout=120)[1]  # the preparation sleeps for an hour
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert rest.strip().splitlines()[-1].startswith("zsseg: interrupted: 1 of 2 images segmented"), rest
    assert "Traceback" not in rest and sorted(p.name for p in out.iterdir()) == ["photo.json", "photo.png", "photo_overlay.png"]


def test_the_demo_extras_pillow_bound_is_explained():
    import importlib.metadata
    import re

    pins = [r for r in importlib.metadata.requires("gradio") or [] if re.match(r"pillow\b", r, re.I)]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for pin in pins:
        bound = re.search(r"<\s*(\d+)", pin)
        if bound:  # installing the demo downgrades a newer Pillow: the README says so, and why
            assert f"pillow<{bound.group(1)}" in readme and f"Pillow {bound.group(1)}" in readme
