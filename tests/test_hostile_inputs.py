"""A sweep of hostile inputs after issue 33, kinds the issue named and others: malformed RLEs in
every mask format, files named like zsseg's own in output folders, damaged earlier outputs,
broken model and tokenizer folders, device strings, compressed bombs, odd arrays. For each one
the command line answers with one line on standard error and a non-zero status, deletes and
overwrites nothing, and a run that succeeds gives the same bytes when run again. In-process
(`zsseg.cli.main`); `tests/test_reliability.py` has the issue's own cases."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from zsseg.cli import main
from zsseg.outputs.writers import SOFTWARE

H, W = 40, 48


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under `root`, by relative path: its bytes' digest, or its target."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[key] = "dir"
    return found


def refused(capsys, root: Path, argv: list, message: str = "", status: int = 2) -> str:
    """`zsseg ARGV` fails with one line (containing `message`) and `status`, and changes nothing under `root`."""
    before = snapshot(root)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == status, err
    assert err.count("\n") == 1 and err.startswith("zsseg: ") and "Traceback" not in err, err
    assert message in err, err
    assert snapshot(root) == before, "a file was written, changed or removed"
    return err


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, quality=95)
    return path


def _mask(k=0):
    mask = np.zeros((H, W), dtype=bool)
    mask[5 + k:20 + k, 8:30] = True
    return mask


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def classify(photo, masks, out, *extra, clip="unused-clip"):
    return ["classify", photo, "--masks", masks, "--classes", "cat; dog", "--clip", clip, "--out", out, *extra]


# --- 1. malformed RLEs, in each of the four JSON layouts that hold them ---------------------------


def _layouts(rle):
    return {
        "coco": {"images": [{"id": 3, "height": H, "width": W}], "annotations": [{"id": 1, "image_id": 3, "segmentation": rle}]},
        "sam": [{"segmentation": rle, "predicted_iou": 0.9}],
        "zsseg": {"software": SOFTWARE, "height": H, "width": W, "classes": [{"index": 0, "name": "cat", "area": 1, "rle": rle}]},
        "zsseg-masks": {"software": SOFTWARE, "masks": [{"id": 9, "rle": rle}]},
    }


GOOD = _rle(_mask())["counts"]
RLES = {
    "counts null": {"size": [H, W], "counts": None},
    "counts object": {"size": [H, W], "counts": {"0": 1}},
    "counts nested list": {"size": [H, W], "counts": [[H * W]]},
    "counts number": {"size": [H, W], "counts": 1920},
    "no counts": {"size": [H, W]},
    "size strings": {"size": ["40", "48"], "counts": GOOD},
    "size floats": {"size": [40.0, 48.0], "counts": GOOD},
    "size of three": {"size": [H, W, 1], "counts": GOOD},
    "size negative": {"size": [-H, -W], "counts": GOOD},
    "size swapped": {"size": [W, H], "counts": GOOD},
    "size booleans": {"size": [True, True], "counts": "0"},
    "counts of zeros": {"size": [H, W], "counts": "000000"},
    "huge run": {"size": [H, W], "counts": [2**40, 5]},
    "runs past the image": {"size": [H, W], "counts": [H * W - 5, 10]},
    "compressed and too long": {"size": [H, W], "counts": GOOD + GOOD},
    "spaces": {"size": [H, W], "counts": " " + GOOD},
    "unicode digits": {"size": [H, W], "counts": "١٢٣"},
    "not an object": "size 40x48",
}


@pytest.mark.parametrize("layout", ["coco", "sam", "zsseg", "zsseg-masks"])
@pytest.mark.parametrize("case", sorted(RLES))
def test_malformed_rles(capsys, tmp_path, photo, layout, case):
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(_layouts(RLES[case])[layout]))
    refused(capsys, tmp_path, classify(photo, path, tmp_path / "out"), "masks.json")


# --- 2. PNG masks, arrays and bombs -----------------------------------------------------------------


def _png_chunks(*chunks):
    data = b"\x89PNG\r\n\x1a\n"
    for kind, payload in chunks:
        data += struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return data


def _ihdr(width, height, depth=8, colour=0):
    return (b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))


def _png_bomb(width, height):
    """A greyscale PNG declaring width x height whose IDAT is zeros compressed ~1000:1."""
    raw = zlib.compress(b"\x00" * ((width + 1) * height), 9)
    return _png_chunks(_ihdr(width, height), (b"IDAT", raw), (b"IEND", b""))


def _png_bytes(array, **info):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **info)
    return buffer.getvalue()


def _ztxt_bomb():
    """A valid 8-bit id map with a compressed text chunk that expands to 50 MB."""
    png = _png_bytes(_mask().astype(np.uint8) * 3)
    text = b"Comment\x00\x00" + zlib.compress(b"a" * 50_000_000, 9)
    chunk = struct.pack(">I", len(text)) + b"zTXt" + text + struct.pack(">I", zlib.crc32(b"zTXt" + text))
    return png[:33] + chunk + png[33:]


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npy_header(shape, descr="|b1", fortran=False, version=(1, 0)):
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode("latin1")
    size_len = 2 if version == (1, 0) else 4
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(header).to_bytes(size_len, "little") + header


def _zip(members, method=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _lying_zip():
    """An .npz whose central directory claims a member of 10 bytes holding more."""
    data = bytearray(_zip([("masks.npy", _npy_bytes(_mask()[None]))], zipfile.ZIP_STORED))
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = struct.pack("<I", 10)  # uncompressed size
    return bytes(data)


def _encrypted_zip():
    data = bytearray(_zip([("masks.npy", _npy_bytes(_mask()[None]))], zipfile.ZIP_STORED))
    data[6:8] = struct.pack("<H", 1)  # the local header's "encrypted" flag
    central = data.rfind(b"PK\x01\x02")
    data[central + 8:central + 10] = struct.pack("<H", 1)
    return bytes(data)


ONE = _mask()[None]
FILES = {
    # PNG folders and instance PNGs
    "folder: empty PNG": ("pngs/0.png", b"", "0.png"),
    "folder: PNG cut after its header": ("pngs/0.png", _png_bytes(_mask().astype(np.uint8) * 255)[:60], "0.png"),
    "folder: JPEG named .png": ("pngs/0.png", b"\xff\xd8\xff\xe0" + b"\x00" * 100, "0.png"),
    "folder: PNG bomb of another size": ("pngs/0.png", _png_bomb(20000, 20000), "the masks are 20000x20000"),
    "folder: 16-bit levels 0, 1, 2": ("pngs/0.png", _png_bytes(np.minimum(np.arange(H * W).reshape(H, W) % 3, 2).astype(np.uint16)),
                                      "not a binary mask"),
    "folder: grey and alpha": ("pngs/0.png", _png_bytes(np.zeros((H, W, 2), np.uint8)), "a mask PNG must be greyscale"),
    "instance: PNG bomb of another size": ("ids.png", _png_bomb(30000, 10000), "the masks are 30000x10000"),
    "instance: text-chunk bomb": ("ids.png", _ztxt_bomb(), "ids.png"),
    "instance: cut in its pixels": ("ids.png", _png_bytes((_mask() * 7).astype(np.uint8))[:-30], "ids.png"),
    "instance: RGBA": ("ids.png", _png_bytes(np.zeros((H, W, 4), np.uint8)), "ids.png"),
    "instance: all background": ("ids.png", _png_bytes(np.zeros((H, W), np.uint8)), "every pixel is 0"),
    "instance: noise of 200 ids": ("ids.png", _png_bytes(np.random.default_rng(1).integers(1, 201, (H, W)).astype(np.uint8)),
                                   "does not look like an instance-id map"),
    "instance: header only": ("ids.png", _png_chunks(_ihdr(W, H), (b"IEND", b"")), "ids.png"),
    # .npy
    "npy: declares 10^9 masks": ("m.npy", _npy_header((10**9, H, W)) + b"\x00" * 100, "m.npy"),
    "npy: declares 2^40 pixels": ("m.npy", _npy_header((1, 2**20, 2**20)) + b"\x00" * 100, "m.npy"),
    "npy: header says object": ("m.npy", _npy_header((1, H, W), descr="|O"), "m.npy"),
    "npy: structured dtype": ("m.npy", _npy_bytes(np.zeros((1, H, W), dtype=[("a", "u1"), ("b", "u1")])), "must be bool"),
    "npy: complex": ("m.npy", _npy_bytes(np.ones((1, H, W), dtype=np.complex64)), "must be bool"),
    "npy: NaN": ("m.npy", _npy_bytes(np.full((1, H, W), np.nan, dtype=np.float32)), "not binary"),
    "npy: datetime": ("m.npy", _npy_bytes(np.zeros((1, H, W), dtype="datetime64[s]")), "must be bool"),
    "npy: strings": ("m.npy", _npy_bytes(np.full((1, H, W), "1")), "must be bool"),
    "npy: version 9": ("m.npy", b"\x93NUMPY\x09\x00" + b"\x00" * 64, "m.npy"),
    "npy: cut in its data": ("m.npy", _npy_bytes(np.ones((2, H, W), bool))[:-100], "m.npy"),
    "npy: header length past the file": ("m.npy", b"\x93NUMPY\x01\x00\xff\xff{", "m.npy"),
    "npy: zero masks": ("m.npy", _npy_bytes(np.zeros((0, H, W), bool)), "holds no masks"),
    "npy: empty file": ("m.npy", b"", "m.npy"),
    # .npz
    "npz: masks bomb of another size": ("m.npz", _zip([("masks.npy", _npy_bytes(np.zeros((50, 1000, 1000), bool)))]),
                                        "the masks are 1000x1000"),
    "npz: 5000 masks of the right size": ("m.npz", _zip([("masks.npy", _npy_header((5000, H, W)) + b"\x00" * (5000 * H * W))]),
                                          "holds 5000 masks, more than the limit of 1000"),
    "npz: member declares more than it holds": ("m.npz", _zip([("masks.npy", _npy_header((3, H, W)) + b"\x01" * (H * W))]),
                                                "the file is damaged"),
    "npz: zip that lies about a size": ("m.npz", _lying_zip(), "m.npz"),
    "npz: encrypted member": ("m.npz", _encrypted_zip(), "m.npz"),
    "npz: a zip inside": ("m.npz", _zip([("masks.npy", _zip([("masks.npy", _npy_bytes(ONE))]))]), "is not a NumPy array"),
    "npz: member pickled with protocol 0": ("m.npz", _zip([("masks.npy", pickle.dumps([1], protocol=0))]), "m.npz"),
    "npz: object ids": ("m.npz", _zip([("masks.npy", _npy_bytes(ONE)), ("ids.npy", _npy_bytes(np.array([{}], dtype=object)))]),
                        "pickled"),
    "npz: float ids": ("m.npz", _zip([("masks.npy", _npy_bytes(ONE)), ("ids.npy", _npy_bytes(np.array([1.5])))]), "'ids' must be"),
    "npz: ids of 10^6 characters": ("m.npz", _zip([("masks.npy", _npy_bytes(ONE)), ("ids.npy", _npy_header((1,), descr="<U1000000"))]),
                                    "ids.npy"),
    "npz: member name escaping the folder": ("m.npz", _zip([("../../masks.npy", _npy_bytes(ONE)), ("x.npy", b"")]), "m.npz"),
    "npz: directory only": ("m.npz", _zip([("masks/", b"")]), "holds no arrays"),
    "npz: not a zip past its magic": ("m.npz", b"PK\x05\x06" + b"\x00" * 18, "m.npz"),
    # JSON mask files
    "json: nested 100000 deep": ("m.json", "[" * 100000 + "]" * 100000, "m.json"),
    "json: NaN in a polygon": ("m.json", '{"annotations": [{"id": 1, "image_id": 1, "segmentation": [[0, 0, NaN, 5, 9, 9]]}]}',
                               "a polygon's coordinates must be finite"),
    "json: polygon of 10^9": ("m.json", json.dumps({"annotations": [{"id": 1, "image_id": 1, "segmentation": [[0, 0, 1e9, 0, 1e9, 1e9]]}]}),
                              "near the 48x40 image"),
    "json: SAM rows ragged": ("m.json", json.dumps([{"segmentation": [[0, 1], [1]]}]), "as rows"),
    "json: SAM rows of 2": ("m.json", json.dumps([{"segmentation": (np.ones((H, W), int) * 2).tolist()}]), "values other than 0 and 1"),
    "json: UTF-16": ("m.json", json.dumps([{"segmentation": _rle(_mask())}]).encode("utf-16"), "not UTF-8"),
    "json: image ids true and 1": ("m.json", json.dumps({"annotations": [
        {"id": 1, "image_id": True, "segmentation": _rle(_mask())}, {"id": 2, "image_id": 1, "segmentation": _rle(_mask(1))}]}), None),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_bad_mask_files(capsys, tmp_path, photo, clip_dir, case):
    name, data, message = FILES[case]
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    masks = path.parent if name.startswith("pngs/") else path
    if message is None:  # accepted: the same labels twice (here: 1 and True are not the same image)
        argv = classify(photo, masks, tmp_path / "out", "--image-id", "1", clip=clip_dir)
        assert main([str(a) for a in argv]) == 0
        first = snapshot(tmp_path / "out")
        assert main([str(a) for a in argv]) == 0 and snapshot(tmp_path / "out") == first
        record = json.loads((tmp_path / "out" / "photo_masks.json").read_text())
        assert [m["id"] for m in record["masks"]] == [2]
        return
    refused(capsys, tmp_path, classify(photo, masks, tmp_path / "out", clip=clip_dir), message)



# --- 3. files named like zsseg's own in the output folders ------------------------------------------


def _npy_masks(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.stack([_mask(), _mask(8)]))
    return path


def _user_png(path):
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(path, format="PNG")


NAMED_LIKE_OURS = {
    "masks JSON of the user's": ("photo_masks.json", lambda p: p.write_text('{"notes": 1}')),
    "empty masks JSON": ("photo_masks.json", lambda p: p.write_bytes(b"")),
    "label PNG of the user's": ("photo.png", _user_png),
    "overlay of the user's, empty": ("photo_overlay.png", lambda p: p.write_bytes(b"")),
    "JSON claiming another software": ("photo.json", lambda p: p.write_text('{"software": "zseg 9"}')),
    "JSON whose mark is not first": ("photo.json", lambda p: p.write_text('{"image": "x", "software": "other"}')),
    "a folder": ("photo.json", lambda p: p.mkdir()),
    "a dangling link": ("photo.png", lambda p: p.symlink_to(p.parent / "nowhere.png")),
    "a link to the user's file": ("photo.png", lambda p: (_user_png(p.parent.parent / "theirs.png"), p.symlink_to(p.parent.parent / "theirs.png"))),
    "a FIFO": ("photo_overlay.png", lambda p: os.mkfifo(p)),
}


@pytest.mark.parametrize("case", sorted(NAMED_LIKE_OURS))
def test_files_named_like_classify_outputs(capsys, tmp_path, photo, clip_dir, case):
    name, make = NAMED_LIKE_OURS[case]
    out = tmp_path / "out"
    out.mkdir()
    make(out / name)
    refused(capsys, tmp_path, classify(photo, _npy_masks(tmp_path), out, clip=clip_dir), name)


@pytest.mark.parametrize("name, content", [
    (".photo.png.abcdefgh.tmp", b"the user's bytes"),
    (".photo.json.abcdefgh.tmp", b'{"software": "mine"}'),
    (".photo_masks.json.12345678.tmp", b""),
    (".photo_overlay.png.a_b_c_d_.tmp", b"\x89PNG\r\n\x1a\n"),
])
def test_files_named_like_classify_temporaries_are_kept(tmp_path, photo, clip_dir, name, content, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(content)
    argv = [str(a) for a in classify(photo, _npy_masks(tmp_path), out, clip=clip_dir)]
    assert main(argv) == 0
    first = snapshot(out)
    assert main(argv) == 0 and snapshot(out) == first  # the same labels, byte for byte
    assert (out / name).read_bytes() == content


# --- 4. damaged earlier outputs of zsseg's: written again, to the same bytes --------------------------


def _zeroed(data: bytes) -> bytes:
    """What a power loss can leave on some file systems: the right size, zeros from the middle on."""
    return data[: len(data) // 2] + b"\x00" * (len(data) - len(data) // 2)


@pytest.mark.parametrize("name", ["photo.png", "photo_overlay.png", "photo.json", "photo_masks.json"])
@pytest.mark.parametrize("damage", ["empty", "header", "zeroed", "one byte"])
def test_damaged_classify_outputs_are_written_again(tmp_path, photo, clip_dir, capsys, name, damage):
    out = tmp_path / "out"
    argv = [str(a) for a in classify(photo, _npy_masks(tmp_path), out, clip=clip_dir)]
    assert main(argv) == 0
    first = snapshot(out)
    data = (out / name).read_bytes()
    (out / name).write_bytes({"empty": b"", "header": data[:16], "zeroed": _zeroed(data), "one byte": data[:1]}[damage])
    assert main(argv) == 0, capsys.readouterr().err
    assert snapshot(out) == first


def test_segment_outputs_zeroed_or_resized_are_not_done(tmp_path, photo, clip_dir, capsys):
    out = tmp_path / "out"
    argv = ["segment", str(photo), "--classes", "cat; dog", "--clip", str(clip_dir), "--out", str(out), "--max-size", "64",
            "--skip-existing"]
    assert main(argv) == 0
    first = snapshot(out)
    for name in ("photo.png", "photo_overlay.png"):
        (out / name).write_bytes(_zeroed((out / name).read_bytes()))
        assert main(argv) == 0 and "1 image segmented" in capsys.readouterr().err
        assert snapshot(out) == first
    with (out / "photo.png").open("ab") as f:  # grown: not the size its JSON records
        f.write(b"\x00" * 10)
    assert main(argv) == 0 and "1 image segmented" in capsys.readouterr().err
    assert snapshot(out) == first


# --- 5. broken model folders and files --------------------------------------------------------------


def _segment(photo, clip, out, *extra):
    """A segment run that encodes its text (no text cache), as a machine's first run does: a
    CLIP's tokenizer is read only then."""
    return ["segment", photo, "--classes", "cat; dog", "--clip", clip, "--out", out, "--max-size", "64", "--no-text-cache", *extra]


def _config(edit):
    def make(folder):
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    return make


def _write(name, data):
    def make(folder):
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return make


def _cut(name, keep):
    def make(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    return make


def _sharded(shard_name):
    def make(folder):
        weights = folder / "model.safetensors"
        weights.rename(folder / "model-00001-of-00001.safetensors")
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"logit_scale": shard_name}}))
    return make


MODEL_FOLDERS = {
    "config empty": (_write("config.json", ""), "cannot read"),
    "config a list": (_write("config.json", "[1, 2]"), "clip"),
    "config without model_type": (_config(lambda c: c.pop("model_type")), "holds a 'None' model"),
    "text_config a string": (_config(lambda c: c.__setitem__("text_config", "big")), "cannot load CLIP"),
    "vision_config null": (_config(lambda c: c.__setitem__("vision_config", None)), "clip"),
    "layers negative": (_config(lambda c: c["vision_config"].__setitem__("num_hidden_layers", -1)), "cannot load CLIP"),
    "heads of 10^6": (_config(lambda c: c["text_config"].__setitem__("num_attention_heads", 10**6)), "cannot load CLIP"),
    "image_size a string": (_config(lambda c: c["vision_config"].__setitem__("image_size", "224")), "cannot load CLIP"),
    "weights cut in their header": (_cut("model.safetensors", 20), "model.safetensors"),
    "weights cut in their data": (_cut("model.safetensors", -1000), "cannot load CLIP"),
    "weights header length of 2^40": (_write("model.safetensors", struct.pack("<Q", 2**40) + b"{}"), "model.safetensors"),
    "weights header not JSON": (_write("model.safetensors", struct.pack("<Q", 5) + b"{oops"), "model.safetensors"),
    "weights empty": (_write("model.safetensors", b""), "model.safetensors"),
    "shard missing": (_sharded("model-00009-of-00009.safetensors"), "names shards that are not in the folder"),
    "shard outside the folder": (_sharded("../../etc/passwd"), "names shards that are not in the folder"),
    "preprocessor not JSON": (_write("preprocessor_config.json", "{nope"), "preprocessor_config.json"),
    "preprocessor std negative": (_write("preprocessor_config.json", json.dumps({"image_mean": [0, 0, 0], "image_std": [1, -1, 1]})),
                                  "above 0"),
    "preprocessor mean infinite": (_write("preprocessor_config.json", '{"image_mean": [1e999, 0, 0], "image_std": [1, 1, 1]}'),
                                   "finite"),
    # A tokenizer is read when text is first encoded (`zsseg.models.openai_clip.LazyTokenizer`):
    # `_segment` encodes afresh (--no-text-cache), as a first run does.
    "own tokenizer.json broken": (_write("tokenizer.json", "{\"model\": 5}"), "cannot load the CLIP tokenizer"),
    "own tokenizer_config nonsense": (_write("tokenizer_config.json", json.dumps({"model_max_length": "x", "tokenizer_class": 5})),
                                      "cannot load the CLIP tokenizer"),
}


@pytest.mark.parametrize("case", sorted(MODEL_FOLDERS))
def test_broken_clip_folders(capsys, tmp_path, photo, clip_dir, case):
    make, message = MODEL_FOLDERS[case]
    folder = tmp_path / "clip"
    shutil.copytree(clip_dir, folder)
    make(folder)
    refused(capsys, tmp_path, _segment(photo, folder, tmp_path / "out"), message)


def _open_clip_folder(tmp_path, config):
    folder = tmp_path / "open-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    (folder / "open_clip_model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize("config, message", [
    ({"model_cfg": "vit"}, "has no model_cfg"),
    ({"model_cfg": {"vision_cfg": {"timm_model_name": "x"}}}, "timm or Hugging Face tower"),
    ({"model_cfg": {}, "preprocess_cfg": {"mean": ["a", 0, 0]}}, "must be 3 finite numbers"),
    ({"model_cfg": {}, "preprocess_cfg": ["a"]}, "preprocess_cfg must be an object"),
    ({"model_cfg": {}, "preprocess_cfg": {"interpolation": "lanczos"}}, "unsupported interpolation"),
    ({"model_cfg": {}}, "open_clip_model.safetensors"),
])
def test_broken_open_clip_folders(capsys, tmp_path, photo, config, message):
    refused(capsys, tmp_path, _segment(photo, _open_clip_folder(tmp_path, config), tmp_path / "out"), message)


@pytest.mark.parametrize("name, data, message", [
    ("clip.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}", "clip.safetensors"),
    ("clip.pt", b"PK\x03\x04" + b"\x00" * 200, "is damaged or not a PyTorch file"),
    ("clip.pth", pickle.dumps({"state_dict": {"w": 1}}, protocol=2), "clip.pth"),
    ("clip.bin", b"\x80\x02" + b"\xff" * 50, "clip.bin"),
    ("clip.safetensors", b"", "clip.safetensors"),
])
def test_broken_clip_files(capsys, tmp_path, photo, name, data, message):
    (tmp_path / name).write_bytes(data)
    refused(capsys, tmp_path, _segment(photo, tmp_path / name, tmp_path / "out"), message)


# --- 6. tokenizers ----------------------------------------------------------------------------------


def _tokenizer_folder(tmp_path, files):
    from conftest import TOKENIZER

    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes((TOKENIZER / name).read_bytes() if content is None else content.encode())
    return folder


@pytest.mark.parametrize("files, message", [
    ({"merges.txt": None}, "holds no CLIP tokenizer"),
    ({"vocab.json": None, "merges.txt": "#version: 0.2\n"}, "splits 'photo'"),
    ({"vocab.json": json.dumps({str(i): i for i in range(60000)}), "merges.txt": None}, "cannot load the CLIP tokenizer"),
    ({"tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"},
                                    "added_tokens": [], "normalizer": None, "pre_tokenizer": None, "post_processor": None,
                                    "decoder": None, "truncation": None, "padding": None})}, "the CLIP tokenizer"),
    ({"tokenizer_config.json": json.dumps({"tokenizer_class": "CLIPTokenizer"}), "vocab.json": "{}", "merges.txt": ""},
     "the CLIP tokenizer"),
])
def test_broken_tokenizers(capsys, tmp_path, photo, clip_dir, files, message):
    refused(capsys, tmp_path, _segment(photo, clip_dir, tmp_path / "out", "--tokenizer", _tokenizer_folder(tmp_path, files)), message)


def test_a_tokenizer_that_is_a_file(capsys, tmp_path, photo, clip_dir):
    (tmp_path / "vocab.json").write_text("{}")
    refused(capsys, tmp_path, _segment(photo, clip_dir, tmp_path / "out", "--tokenizer", tmp_path / "vocab.json"), "is a file")


# --- 7. device strings, on every command that takes one ----------------------------------------------


DEVICES = ["cuda:-1", "gpu", "cuda:0,cpu", " cpu", "cpu ", "vulkan", "ve", "fpga", "lazy", "xpu", "maia", "ipu", "cuda: 0",
           "cuda:1e3", "0", "cpu:0:0", "META", "hip"]


@pytest.mark.parametrize("device", DEVICES)
def test_device_strings_segment(capsys, tmp_path, photo, clip_dir, device):
    refused(capsys, tmp_path, _segment(photo, clip_dir, tmp_path / "out", "--device", device), "device")


@pytest.mark.parametrize("command", ["eval", "pseudo-label", "train", "prompts"])
def test_device_meta_on_other_commands(capsys, tmp_path, clip_dir, command):
    from conftest import DATA

    args = {
        "eval": ["eval", "--dataset", "voc-20", "--data-root", DATA, "--clip", clip_dir, "--limit", "1"],
        "pseudo-label": ["pseudo-label", "--dataset", "coco-stuff", "--data-root", DATA, "--clip", clip_dir, "--limit", "1",
                         "--output-dir", tmp_path / "pl"],
        "train": ["train", "proposals", "--dataset", "voc-20", "--split", "val", "--data-root", DATA, "--config", "tiny", "--clip",
                  clip_dir, "--output-dir", tmp_path / "run"],
        "prompts": ["prompts", "select", "--dataset", "coco-stuff", "--data-root", DATA, "--clip", clip_dir,
                    "--limit", "1", "--output", tmp_path / "p.json"],
    }[command]
    refused(capsys, tmp_path, [*args, "--device", "meta"], "device 'meta' is not one zsseg runs on")


# --- 8. training folders, datasets and predictions -------------------------------------------------


def _train_args(clip_dir, out):
    from conftest import DATA

    return ["train", "proposals", "--dataset", "voc-20", "--split", "val", "--data-root", DATA, "--config", "tiny", "--clip",
            clip_dir, "--output-dir", out, "--max-iters", "1"]


def _torch_bytes(value):
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("name, data, message", [
    ("checkpoint-0000009.pt", lambda: _torch_bytes({"step": 9, "signature": "{}", "model": {}}), "carries no zsseg mark"),
    ("checkpoint-0000001.pt", lambda: b"", "is empty"),
    ("checkpoint-0000001.pt", lambda: _torch_bytes({"software": "zsseg 0.1.0", "step": 4}), "not of the step its name says"),
    ("checkpoint-0000002.pt", lambda: pickle.dumps({"software": "zsseg"}), "cannot read checkpoint"),
    ("proposals.safetensors", lambda: b"my weights", "proposals.safetensors exists and was not written by zsseg"),
    ("proposals.json", lambda: b"{}", "proposals.json exists and was not written by zsseg"),
    ("log.jsonl", lambda: b"", "log.jsonl exists and was not written by zsseg"),
])
def test_files_named_like_training_outputs(capsys, tmp_path, clip_dir, name, data, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_bytes(data())
    refused(capsys, tmp_path, _train_args(clip_dir, out), message)


def _ade(root):
    from test_safety import _small_ade

    return _small_ade(root, count=2)


def _png_header_only(path, width, height):
    path.write_bytes(_png_chunks(_ihdr(width, height), (b"IEND", b"")))


@pytest.mark.parametrize("damage, message", [
    (lambda label: _png_header_only(label, 20000, 20000), "above the limit"),
    (lambda label: label.write_bytes(_png_bomb(40, 32)[:-40]), "cannot read label map"),
    (lambda label: _png_header_only(label, 40, 32), "cannot read label map"),
    (lambda label: label.write_bytes(b""), "cannot read label map"),
])
def test_damaged_label_maps(capsys, tmp_path, damage, message):
    labels = _ade(tmp_path / "data")
    damage(labels / "ADE_val_00000001.png")
    refused(capsys, tmp_path, ["eval", "--dataset", "ade20k-150", "--data-root", tmp_path / "data", "--oracle", "--proposals",
                               "ground-truth", "--quiet"], message)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n", "png"])
def test_files_named_like_predictions(capsys, tmp_path, content):
    _ade(tmp_path / "data")
    out = tmp_path / "predictions"
    out.mkdir()
    if content == "png":
        _user_png(out / "ADE_val_00000000.png")
    else:
        (out / "ADE_val_00000000.png").write_bytes(content)
    refused(capsys, tmp_path, ["eval", "--dataset", "ade20k-150", "--data-root", tmp_path / "data", "--oracle", "--proposals",
                               "ground-truth", "--quiet", "--save-predictions", out], "was not written by zsseg")


# --- 9. damaged proposal-network folders (what `zsseg train proposals` wrote, then edited) ----------


@pytest.fixture(scope="module")
def network(clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("network") / "run"
    assert main([str(a) for a in _train_args(clip_dir, out)]) == 0
    return out


def _edit_proposals(edit):
    def make(folder):
        info = json.loads((folder / "proposals.json").read_text())
        edit(info)
        (folder / "proposals.json").write_text(json.dumps(info))
    return make


@pytest.mark.parametrize("damage, message", [
    (_edit_proposals(lambda info: info.__setitem__("train", ["x"])), "does not match proposals.json"),
    (_edit_proposals(lambda info: info.__setitem__("model", "big")), "does not match proposals.json"),
    (_edit_proposals(lambda info: info.pop("class_names")), "does not match proposals.json"),
    (_edit_proposals(lambda info: info.__setitem__("format", "zsseg-proposals/0")), "proposals.json"),
    (lambda folder: (folder / "proposals.safetensors").write_bytes(b"\x00" * 16), "cannot read"),
    (lambda folder: (folder / "proposals.json").write_text("[]"), "proposals.json"),
])
def test_damaged_proposal_networks(capsys, tmp_path, photo, clip_dir, network, damage, message):
    folder = tmp_path / "network"
    shutil.copytree(network, folder)
    damage(folder)
    refused(capsys, tmp_path, _segment(photo, clip_dir, tmp_path / "out", "--proposals", "maskformer", "--proposal-weights", folder),
            message)
