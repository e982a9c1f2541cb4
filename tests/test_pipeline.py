"""The pipelined folder run (`zsseg.pipeline`): the next image is prepared on a worker thread
while CLIP works on this one, with the sequential run's outputs, failures and interrupts."""

import hashlib
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from zsseg import Segmenter
from zsseg.cli import main
from zsseg.pipeline import ahead, pipeline_enabled, settle


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def coco_folder(coco_val, tmp_path_factory):
    """Three real COCO photos with an unreadable file between them (it sorts second)."""
    folder = tmp_path_factory.mktemp("coco")
    for image, _ in coco_val[:3]:
        shutil.copy(image, folder / image.name)
    (folder / f"{coco_val[0][0].stem}_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_pipelined_folder_run_writes_the_sequential_runs_bytes(clip_dir, coco_folder, tmp_path, capsys):
    """Every output file byte for byte, and the same failure line and summary; the failing image
    in the middle (read on the worker thread) is counted and the run goes on."""
    errors = {}
    for mode, extra in (("pipelined", []), ("sequential", ["--no-pipeline"])):
        status = main(["segment", str(coco_folder), "--classes", "person; dog; wall; grass; sky", "--clip", str(clip_dir),
                       "--max-size", "128", "--out", str(tmp_path / mode), *extra])
        assert status == 1
        errors[mode] = capsys.readouterr().err.replace(str(tmp_path / mode), "OUT")
    assert errors["pipelined"] == errors["sequential"]
    assert "_broken.jpg: corrupt or truncated image" in errors["pipelined"] and "3 images segmented, 1 failed" in errors["pipelined"]
    pipelined = _digests(tmp_path / "pipelined")
    assert len(pipelined) == 9 and pipelined == _digests(tmp_path / "sequential")


def test_segment_is_finish_of_prepare_image(clip, coco_val):
    segmenter = Segmenter(clip=clip, proposals="selective-search", max_size=96, max_proposals=20)
    image = coco_val[0][0]
    whole = segmenter.segment(image, "person; grass; sky")
    prepared = segmenter.prepare_image(image)
    assert prepared.work is not None and prepared.work.crops is not None  # Selective Search and the crops ran ahead
    halves = segmenter.finish(prepared, "person; grass; sky")
    assert np.array_equal(whole.label_map, halves.label_map)
    assert torch.equal(whole.masks, halves.masks) and torch.equal(whole.region_probs, halves.region_probs)
    assert set(halves.timings) == {"image_loading", "proposals", "crops", "text_encoding", "image_encoding", "assembly"}


def test_fast_method_prepares_only_its_proposals(clip, coco_val):
    segmenter = Segmenter(clip=clip, proposals="selective-search", max_size=96, max_proposals=20, method="fast")
    prepared = segmenter.prepare_image(coco_val[0][0])
    assert prepared.work.crops is None
    assert np.array_equal(segmenter.finish(prepared, "person; sky").label_map, segmenter.segment(coco_val[0][0], "person; sky").label_map)


def test_ahead_keeps_order_and_hands_over_errors():
    def load(n):
        time.sleep(0.01 * (n % 3))
        if n == 2:
            raise ValueError("two")
        return n * 10

    for enabled in (True, False):
        seen = []
        for item, outcome in ahead(list(range(5)), load, enabled=enabled):
            try:
                seen.append((item, outcome.result()))
            except ValueError as error:
                seen.append((item, str(error)))
        assert seen == [(0, 0), (1, 10), (2, "two"), (3, 30), (4, 40)]


def test_sequential_ahead_loads_each_item_when_its_turn_comes():
    loaded = []
    for item, _ in ahead([1, 2, 3], loaded.append, enabled=False):
        assert loaded == list(range(1, item + 1))


def test_the_worker_stops_when_the_loop_ends_and_settle_waits_for_it():
    """Ctrl-C or an error in the caller's loop: the worker loads no further item, and `settle`
    (which a command calls before it exits: a process that exits under a worker busy in torch
    aborts) returns once it has ended."""
    loaded = []

    def load(n):
        time.sleep(0.05)
        loaded.append(n)
        return n

    items = ahead(list(range(100)), load)
    next(items)
    workers = [t for t in threading.enumerate() if t.name == "zsseg-prepare"]
    assert workers and all(t.daemon for t in workers)
    items.close()
    settle()
    assert not any(worker.is_alive() for worker in workers)
    assert len(loaded) <= 4  # the one taken, at most two held, and the one in hand when told to stop


def test_pipeline_environment_variable(monkeypatch):
    monkeypatch.setenv("ZSSEG_PIPELINE", "0")
    assert not pipeline_enabled()
    monkeypatch.setenv("ZSSEG_PIPELINE", "1")
    assert pipeline_enabled(default=False)
    monkeypatch.delenv("ZSSEG_PIPELINE")
    assert pipeline_enabled()
