"""A user's data is never destroyed: outputs never replace inputs, ground truth or files zsseg
did not write; plus the other defects found by trying zsseg as a new user would."""

import hashlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from zsseg import Segmenter, ZssegError
from zsseg.cli import main
from zsseg.data.datasets import load_dataset
from zsseg.outputs.writers import SOFTWARE, check_target, written_by_zsseg


def _image(path, size=(48, 40), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _segment(clip_dir, out, *inputs, extra=(), classes="cat; dog"):
    return main(["segment", *map(str, inputs), "--classes", classes, "--clip", str(clip_dir), "--out", str(out), "--max-size", "64", *extra])


# --- 1. outputs never replace inputs, nor files zsseg did not write -----------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_segmenting_a_folder_into_itself_leaves_every_input_identical(clip_dir, tmp_path, capsys, overwrite):
    photos = tmp_path / "photos"
    photos.mkdir()
    _image(photos / "photo.png")
    _image(photos / "other.jpg", seed=1)
    before = _digests(photos)
    assert _segment(clip_dir, photos, photos, extra=["--overwrite"] if overwrite else []) == 2
    err = capsys.readouterr().err
    assert "photo.png is one of the inputs" in err and err.count("\n") == 1
    assert _digests(photos) == before  # nothing replaced, nothing added


def test_a_folder_segmented_into_itself_twice(clip_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = _image(photos / "a.jpg")
    before = photo.read_bytes()
    assert _segment(clip_dir, photos, photos) == 0
    assert _segment(clip_dir, photos, photos) == 0  # its label map and overlay are not taken as inputs
    assert "1 image segmented, 0 failed" in capsys.readouterr().err
    assert photo.read_bytes() == before and sorted(p.name for p in photos.iterdir()) == ["a.jpg", "a.json", "a.png", "a_overlay.png"]


def test_the_config_file_read_is_never_an_output(clip_dir, tmp_path, capsys):
    """`--config out/photo.json` beside `--out out`: photo's new record would replace the file
    the run reads its settings from, so it is refused even with --overwrite."""
    photo = _image(tmp_path / "photo.png")
    assert _segment(clip_dir, tmp_path / "out", photo) == 0
    record = tmp_path / "out" / "photo.json"
    before = record.read_bytes()
    capsys.readouterr()
    assert main(["segment", str(photo), "--config", str(record), "--out", str(tmp_path / "out"), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "photo.json is one of the inputs" in err and err.count("\n") == 1 and record.read_bytes() == before


def test_files_the_command_reads_are_never_outputs(clip_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    vocabulary = out / "photo.json"  # an odd name for a vocabulary file, but the user's
    vocabulary.write_text("cat\ndog\n")
    photo = _image(tmp_path / "photo.png")
    status = main(["segment", str(photo), "--vocabulary-file", str(vocabulary), "--clip", str(clip_dir), "--out", str(out), "--overwrite"])
    assert status == 2 and "photo.json is one of the inputs" in capsys.readouterr().err
    assert vocabulary.read_text() == "cat\ndog\n"
    config = clip_dir / "config.json"
    before = config.read_bytes()
    assert _segment(clip_dir, clip_dir, _image(tmp_path / "config.png"), extra=["--overwrite"]) == 2
    assert "config.json is one of the inputs" in capsys.readouterr().err and config.read_bytes() == before


def test_single_file_with_its_own_folder_as_output(clip_dir, tmp_path, capsys):
    photo = _image(tmp_path / "photo.png")
    before = photo.read_bytes()
    assert _segment(clip_dir, tmp_path, photo) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert photo.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_a_foreign_file_in_the_output_folder_is_kept_unless_overwrite(clip_dir, tmp_path, capsys):
    photo = _image(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo.json").write_text('{"my": "notes"}')
    assert _segment(clip_dir, out, photo) == 2
    assert "photo.json exists and was not written by zsseg" in capsys.readouterr().err
    assert (out / "photo.json").read_text() == '{"my": "notes"}' and sorted(p.name for p in out.iterdir()) == ["photo.json"]
    assert _segment(clip_dir, out, photo, extra=["--overwrite"]) == 0
    assert json.loads((out / "photo.json").read_text())["software"] == SOFTWARE


def test_rerunning_replaces_zsseg_own_outputs(clip_dir, tmp_path):
    photo = _image(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    assert _segment(clip_dir, out, photo) == 0
    assert all(written_by_zsseg(p) for p in out.iterdir())
    assert _segment(clip_dir, out, photo, classes="cat; dog; bird") == 0
    assert json.loads((out / "photo.json").read_text())["vocabulary"] == ["cat", "dog", "bird"]


def test_check_target_rules(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"software": SOFTWARE}))
    check_target(mine)  # zsseg's own file
    foreign = tmp_path / "label.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(foreign)
    with pytest.raises(ZssegError, match="not written by zsseg"):
        check_target(foreign)
    check_target(foreign, overwrite=True)
    with pytest.raises(ZssegError, match="one of the inputs"):
        check_target(foreign, inputs=frozenset({foreign.resolve()}), overwrite=True)
    (tmp_path / "notes.txt").write_text("x")
    assert not written_by_zsseg(tmp_path / "notes.txt")


# --- 2. eval --save-predictions never writes into the dataset ---------------------------------


def _small_ade(root, count=2):
    """A tiny ADE20K-150 layout with real-format files (never the shared samples: a bug here
    must not be able to damage them)."""
    images, labels = root / "ADEChallengeData2016/images/validation", root / "ADEChallengeData2016/annotations/validation"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(count):
        _image(images / f"ADE_val_{i:08d}.jpg", size=(40, 32), seed=i)
        Image.fromarray(np.full((32, 40), 1 + i, np.uint8)).save(labels / f"ADE_val_{i:08d}.png")
    return labels


def _eval(root, *extra):
    return main(["eval", "--dataset", "ade20k-150", "--data-root", str(root), "--oracle", "--proposals", "ground-truth", "--quiet", *extra])


@pytest.mark.parametrize("where", ["annotations/validation", "images/validation", "", "annotations/validation/new"])
def test_predictions_inside_the_dataset_are_refused(tmp_path, capsys, where):
    labels = _small_ade(tmp_path)
    dataset_dir = tmp_path / "ADEChallengeData2016"
    before = {p: p.read_bytes() for p in sorted(dataset_dir.rglob("*")) if p.is_file()}
    assert _eval(tmp_path, "--save-predictions", str(dataset_dir / where)) == 2
    assert "inside the ade20k-150 dataset's folder" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted(dataset_dir.rglob("*")) if p.is_file()} == before
    assert not (labels / "new").exists()


def test_predictions_replace_only_earlier_predictions(tmp_path, capsys):
    _small_ade(tmp_path / "data")
    out = tmp_path / "predictions"
    assert _eval(tmp_path / "data", "--save-predictions", str(out)) == 0
    first = _digests(out)
    assert len(first) == 2 and all(written_by_zsseg(p) for p in out.iterdir())
    assert _eval(tmp_path / "data", "--save-predictions", str(out)) == 0  # a rerun replaces its own files
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(out / "ADE_val_00000001.png")  # the user's file
    kept = (out / "ADE_val_00000001.png").read_bytes()
    capsys.readouterr()
    assert _eval(tmp_path / "data", "--save-predictions", str(out)) == 2
    assert "ADE_val_00000001.png exists and was not written by zsseg" in capsys.readouterr().err
    assert (out / "ADE_val_00000001.png").read_bytes() == kept


def test_eval_json_output_is_checked_like_predictions(tmp_path, capsys):
    _small_ade(tmp_path / "data")
    inside = tmp_path / "data" / "ADEChallengeData2016" / "scores.json"
    assert _eval(tmp_path / "data", "--output", str(inside)) == 2 and not inside.exists()
    mine = tmp_path / "notes.json"
    mine.write_text("{}")
    assert _eval(tmp_path / "data", "--output", str(mine)) == 2
    assert "not written by zsseg" in capsys.readouterr().err and mine.read_text() == "{}"
    scores = tmp_path / "scores.json"
    assert _eval(tmp_path / "data", "--output", str(scores)) == 0 and _eval(tmp_path / "data", "--output", str(scores)) == 0
    assert json.loads(scores.read_text())["mIoU"] == 100.0


@pytest.mark.parametrize("log", ["my own notes\n", '{"step": 5, "loss": 1.0, "note": "another tool"}\nmy notes\n'])
def test_training_never_replaces_a_foreign_log(tmp_path, capsys, log):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text(log)
    status = main(["train", "proposals", "--dataset", "voc-20", "--split", "val", "--data-root", str(DATA), "--config", "tiny",
                   "--clip", str(tmp_path / "no-clip"), "--output-dir", str(out)])
    assert status == 2 and "log.jsonl exists and was not written by zsseg" in capsys.readouterr().err
    assert (out / "log.jsonl").read_text() == log
    assert main(["train", "proposals", "--dataset", "voc-20", "--split", "val", "--data-root", str(DATA), "--config", "tiny",
                 "--output-dir", str(DATA / "VOCdevkit" / "runs")]) == 2
    assert "inside the voc-20 dataset's folder" in capsys.readouterr().err


# --- 3. a split's image list is complete ----------------------------------------------------


def test_a_missing_label_is_an_error_unless_skipped(tmp_path, capsys):
    labels = _small_ade(tmp_path, count=3)
    (labels / "ADE_val_00000001.png").unlink()
    with pytest.raises(ZssegError, match=r"1 of 3 images has no label map, for example ADE_val_00000001.jpg.*set skip_missing_labels"):
        load_dataset("ade20k-150", tmp_path)
    assert _eval(tmp_path, "--limit", "2") == 2
    err = capsys.readouterr().err  # the command line names its own flag
    assert "ADE_val_00000001" in err and "--skip-missing-labels" in err and "skip_missing_labels" not in err
    dataset = load_dataset("ade20k-150", tmp_path, skip_missing_labels=True)  # still the whole split
    assert [s.name for s in dataset.samples] == ["ADE_val_00000000", "ADE_val_00000001", "ADE_val_00000002"]
    out = tmp_path / "scores.json"
    assert _eval(tmp_path, "--skip-missing-labels", "--output", str(out)) == 0
    assert "1 skipped: no readable label map" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["num_images"] == 2 and report["skipped_images"] == 1
    # --limit takes the same first images with or without the flag; the skipped one is among them or not
    assert _eval(tmp_path, "--skip-missing-labels", "--limit", "1", "--output", str(out)) == 0
    assert (json.loads(out.read_text())["num_images"], json.loads(out.read_text())["skipped_images"]) == (1, 0)
    assert _eval(tmp_path, "--skip-missing-labels", "--limit", "2", "--output", str(out)) == 0
    assert (json.loads(out.read_text())["num_images"], json.loads(out.read_text())["skipped_images"]) == (1, 1)


def test_an_unreadable_label_is_an_error_unless_skipped(tmp_path, capsys):
    labels = _small_ade(tmp_path, count=3)
    (labels / "ADE_val_00000002.png").write_bytes(b"not a png")
    assert _eval(tmp_path) == 2
    assert "ADE_val_00000002.png: cannot read label map" in capsys.readouterr().err
    out = tmp_path / "scores.json"
    assert _eval(tmp_path, "--skip-missing-labels", "--output", str(out)) == 0
    assert json.loads(out.read_text())["skipped_images"] == 1 and json.loads(out.read_text())["num_images"] == 2


# --- 4. one pixel limit, stated -------------------------------------------------------------


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height, with no pixel data: opening it is cheap."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    return path


def test_pixel_limit_is_one_number_with_the_size_in_the_message(tmp_path):
    from zsseg.data.images import MAX_PIXELS, read_image

    with pytest.raises(ZssegError, match=r"13000x13000 \(169,000,000 pixels\), above the limit of 150,000,000 pixels"):
        read_image(_png_header_only(tmp_path / "huge.png", 13000, 13000))
    # Above Pillow's own guard (179 million pixels), the message is still zsseg's one limit.
    with pytest.raises(ZssegError, match=r"image has 300,000,000 pixels, above the limit of 150,000,000 pixels"):
        read_image(_png_header_only(tmp_path / "huger.png", 20000, 15000))
    # A 10000x10000 photo is under the limit: it gets as far as decoding (this one has no pixels).
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and Pillow's own 89-million-pixel warning is not raised
        with pytest.raises(ZssegError, match="corrupt or truncated"):
            read_image(_png_header_only(tmp_path / "big.png", 10000, 10000))
    assert MAX_PIXELS == 150_000_000


# --- 5. a closed pipe ------------------------------------------------------------------------


def test_closed_pipe_is_quiet():
    proc = subprocess.Popen([sys.executable, "-m", "zsseg.cli", "vocabularies"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before zsseg writes, as with `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


# --- 7. true counts, once per image ----------------------------------------------------------


def test_the_same_image_twice_is_segmented_once(clip_dir, tmp_path, capsys):
    photo = _image(tmp_path / "photo.png")
    assert _segment(clip_dir, tmp_path / "out", photo, tmp_path / "." / "photo.png", photo) == 0
    err = capsys.readouterr().err
    assert "1 image segmented, 0 failed; outputs in" in err
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_ctrl_c_reports_what_was_finished(clip_dir, tmp_path, capsys, monkeypatch):
    images = [_image(tmp_path / f"{name}.png", seed=i) for i, name in enumerate("abc")]
    calls = []
    real = Segmenter.finish  # CLIP's half of each image, on the main thread (the next is prepared ahead)

    def finish_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "finish", finish_then_interrupt)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert _segment(clip_dir, tmp_path / "out", broken, *images) == 130
    err = capsys.readouterr().err.splitlines()
    assert "broken.jpg: not an image file" in err[0]  # what failed before Ctrl-C is still reported
    assert err[1].endswith("interrupted: 1 of 4 images segmented, 1 failed; their outputs are in " + str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "a.png", "a_overlay.png"]
    calls.clear()
    calls.append(1)  # the first image is interrupted: nothing done, no folder claimed or made
    assert _segment(clip_dir, tmp_path / "out2", *images) == 130
    assert capsys.readouterr().err.strip().endswith("interrupted: 0 of 3 images segmented, 0 failed")
    assert not (tmp_path / "out2").exists()


# --- 8. any script in the legend, UTF-8 in the JSON ------------------------------------------


def test_non_latin_names_are_drawn_and_kept(clip_dir, tmp_path):
    from zsseg.outputs.fonts import legend_font

    font, text = legend_font("猫", 24)
    if text != "猫":
        pytest.skip("no font covering CJK is installed here (Debian/Ubuntu: apt install fonts-noto-cjk; .ci/run installs it)")

    def render(t):
        image = Image.new("L", (40, 40), 255)
        from PIL import ImageDraw

        ImageDraw.Draw(image).text((4, 4), t, font=font, fill=0)
        return np.array(image)

    cat, dog = render("猫"), render("犬")
    assert (cat < 128).any() and not np.array_equal(cat, dog)  # real glyphs, not one empty box for both
    photo = _image(tmp_path / "photo.png", size=(96, 80))
    assert _segment(clip_dir, tmp_path / "out", photo, classes="猫; 犬") == 0
    raw = (tmp_path / "out" / "photo.json").read_bytes()
    assert "猫".encode("utf-8") in raw and b"\\u" not in raw


def test_a_name_no_font_covers_falls_back_to_question_marks(monkeypatch):
    from zsseg.outputs import fonts

    monkeypatch.setattr(fonts, "_candidates", lambda needed: [])
    fonts._font_file.cache_clear()
    try:
        font, text = fonts.legend_font("猫 cat", 20)
        assert text == "? cat"
        assert fonts.legend_font("café", 20)[1] == "café"  # Latin-1 is drawn by the built-in font
    finally:
        fonts._font_file.cache_clear()


# --- 9. nothing created before there is something to write ----------------------------------


def test_failures_before_writing_create_no_output_folder(clip_dir, tmp_path, capsys):
    photo = _image(tmp_path / "photo.png")
    assert _segment(tmp_path / "no-such-clip", tmp_path / "out1", photo) == 2
    assert _segment(clip_dir, tmp_path / "out2", photo, classes="cat; cat") == 2
    assert _segment(clip_dir, tmp_path / "out3" / "deeper", tmp_path / "missing.png") == 1
    assert not any((tmp_path / name).exists() for name in ("out1", "out2", "out3"))
    _small_ade(tmp_path / "data")
    assert main(["eval", "--dataset", "ade20k-150", "--data-root", str(tmp_path / "data"), "--clip", str(tmp_path / "no-clip"),
                 "--save-predictions", str(tmp_path / "preds")]) == 2
    assert not (tmp_path / "preds").exists()


# --- 10. messages -----------------------------------------------------------------------------


def test_errors_name_the_flag_typed(clip_dir, tmp_path, capsys):
    for flag, value in [("--max-size", "0"), ("--batch-size", "0"), ("--max-proposals", "-1"), ("--ensemble-weight", "2")]:
        with pytest.raises(SystemExit) as exit_info:
            _segment(clip_dir, tmp_path / "out", _image(tmp_path / "a.png"), extra=[flag, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}:" in err and err.count("\n") == 1


def test_train_without_what_and_version(capsys):
    assert main(["train"]) == 2
    assert "say what to train: `zsseg train proposals" in capsys.readouterr().err
    assert main([]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == SOFTWARE


def test_rgba_input_gives_no_warning(clip_dir, tmp_path):
    from zsseg.data.images import image_tensor, read_image

    path = tmp_path / "rgba.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 4), dtype=np.uint8), "RGBA").save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image_tensor(read_image(path))
        image_tensor(Image.open(path))


def test_offline_hub_is_not_retried(tmp_path, monkeypatch):
    """Where the hub cannot be reached, only the local cache is tried: the offline message
    comes at once, not after the hub client's retries."""
    import huggingface_hub

    from zsseg.models import loading as clip_module
    from zsseg.models import hub

    tried = []

    def fake_download(repo, filename, local_files_only=False, **kwargs):
        tried.append(local_files_only)
        raise OSError("not found")

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)  # config.json: the first read of a checkpoint
    monkeypatch.setattr("zsseg.models.openai_clip.open_clip_hub_folder", lambda name: None)  # not an open_clip repo
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ZssegError, match="--local-dir"):
        clip_module.load_clip("openai/clip-vit-base-patch16")
    assert tried == [True]
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    with pytest.raises(ZssegError):
        clip_module.load_clip("openai/clip-vit-base-patch16")
    assert tried == [True, True, False]


def test_ctrl_c_while_the_command_starts(monkeypatch, capsys):
    """A Ctrl-C while torch and the rest are still being imported: one line, status 130."""
    import importlib.abc

    from zsseg import console

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "zsseg.cli":
                raise KeyboardInterrupt
            return None

    exits = []
    monkeypatch.setattr(console, "_exit_now", exits.append)  # the real one ends the process at once
    monkeypatch.delitem(sys.modules, "zsseg.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert console.main() == 130 and exits == [130]
    assert capsys.readouterr().err == "zsseg: interrupted\n"


def test_importing_zsseg_is_light():
    code = "import sys, zsseg; assert 'torch' not in sys.modules; from zsseg import Segmenter; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_version_answers_without_loading_torch(tmp_path):
    """`zsseg --version` (the installed command's entry point) prints at once, imports no torch,
    and keeps the output rules of every command: a full disk is one line and status 2."""
    code = ("import sys; sys.argv = ['zsseg', '--version']; from zsseg.console import main\n"
            "try:\n    status = main()\nexcept SystemExit as stop:\n    status = stop.code\n"
            "sys.stderr.write('torch loaded\\n' if 'torch' in sys.modules else ''); sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{SOFTWARE}\n", "")
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
        assert (done.returncode, done.stderr) == (2, "zsseg: error: cannot write to standard output: No space left on device\n")


def test_the_command_waits_passively_between_parallel_regions(monkeypatch):
    """The command line makes OpenMP's and OpenBLAS's idle workers sleep soon, before torch and
    numpy load them (spinning workers burned 0.5-0.9 CPU-s per two-stage image on 2 cores); values
    the user set are kept. It also collects reference cycles less often, and freezes the
    collector once the command is done, so that the interpreter's shutdown does not walk every
    object left (0.3-0.5 CPU-s)."""
    import gc

    from zsseg import cli, console

    seen = []
    monkeypatch.setattr(cli, "main", lambda: seen.append((os.environ.get("OMP_WAIT_POLICY"), os.environ.get("OPENBLAS_THREAD_TIMEOUT"))) or 0)
    monkeypatch.setattr(gc, "set_threshold", lambda *values: seen.append(values))  # the test process keeps its own
    monkeypatch.setattr(gc, "freeze", lambda: seen.append("freeze"))
    monkeypatch.setattr(console, "reuse_freed_memory", lambda: seen.append("malloc"))  # this process keeps its malloc
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    assert console.main() == 0
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "10")
    assert console.main() == 0
    assert seen == [(10_000, 10, 10), "malloc", ("PASSIVE", "4"), "freeze", (10_000, 10, 10), "malloc", ("ACTIVE", "10"), "freeze"]


def test_the_command_keeps_freed_memory_for_the_next_batch_unless_told_otherwise():
    """With glibc, large blocks come from the heap and up to 256 MB stay free there (a batch of
    crops no longer maps and zero-fills its activations afresh); malloc's own variables, where
    the user set them, win. In fresh processes: the setting is the process's."""
    import platform

    code = "from zsseg.console import reuse_freed_memory; print(sorted(reuse_freed_memory().items()))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    told = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**env, "MALLOC_TRIM_THRESHOLD_": "131072"})
    tuned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**env, "GLIBC_TUNABLES": "glibc.malloc.mmap_max=10"})
    glibc = platform.libc_ver()[0] == "glibc"
    expected = "[('M_MMAP_MAX', 0), ('M_TRIM_THRESHOLD', 268435456)]" if glibc else "[]"
    assert (plain.stdout.strip(), told.stdout.strip(), tuned.stdout.strip()) == (expected, "[]", "[]"), plain.stderr


def test_the_command_ends_its_process_after_the_exit_handlers_and_running_threads(tmp_path):
    """`zsseg.console.run` (the installed command, `python -m zsseg`) skips the interpreter's
    teardown once the command is done, but runs the exit handlers (logs, temporary folders) and,
    where a non-daemon thread still runs, ends as the interpreter does, after it."""
    code = (
        "import atexit, sys, threading, time\n"
        "from pathlib import Path\n"
        "out = Path(sys.argv[1])\n"
        "atexit.register(lambda: (out / 'exit-handler').write_text('ran'))\n"
        "if sys.argv[2] == 'thread':\n"
        "    threading.Thread(target=lambda: (time.sleep(0.5), (out / 'thread').write_text('done'))).start()\n"
        "sys.argv = ['zsseg', '--version']\n"
        "from zsseg.console import run\n"
        "run()\n"
    )
    for mode in ("plain", "thread"):
        folder = tmp_path / mode
        folder.mkdir()
        done = subprocess.run([sys.executable, "-c", code, str(folder), mode], capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stdout, done.stderr) == (0, f"{SOFTWARE}\n", "")
        assert (folder / "exit-handler").read_text() == "ran"
        assert (folder / "thread").is_file() == (mode == "thread")
        if mode == "thread":
            assert (folder / "thread").read_text() == "done"
    failed = subprocess.run([sys.executable, "-m", "zsseg", "segment", str(tmp_path / "missing.jpg"), "--classes", "a; b",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and "no such file" in failed.stderr
