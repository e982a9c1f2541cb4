"""The pipelined folder run (`zsseg.runs.read_ahead`): the next image is prepared on a worker thread
while CLIP works on this one, with the sequential run's outputs, failures and interrupts."""

import hashlib
import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from conftest import subset
from zsseg import Segmenter, ZssegError
from zsseg.cli import _parser, main
from zsseg.evaluation.predictors import ClipPredictor
from zsseg.evaluation.runner import evaluate_predictor
from zsseg.runs.read_ahead import ahead, pipeline_enabled, settle
from zsseg.training.self_training import pseudo_label


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


# --- eval and pseudo-label: the same pipeline through `for_each_shard` ----------------------


class _Recording(ClipPredictor):
    """A `ClipPredictor` that notes which thread prepared each image, and can fail on one."""

    def __init__(self, *args, fail_on: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads, self.fail_on, self.finished = [], fail_on, 0

    def prepare(self, image, label):
        self.threads.append(threading.current_thread().name)
        if len(self.threads) == self.fail_on:
            raise ZssegError("this image cannot be prepared")
        return super().prepare(image, label)

    def finish(self, prepared):
        self.finished += 1
        return super().finish(prepared)


def test_evaluate_pipelined_scores_and_predictions_equal_the_sequential_run(clip, tmp_path):
    dataset = subset("camvid", "val", 3)
    segmenter = Segmenter(clip=clip, proposals="selective-search", max_size=96, max_proposals=20)
    reports, threads = {}, {}
    for mode in ("pipelined", "sequential"):
        predictor = _Recording(segmenter, dataset.vocabulary)
        report = evaluate_predictor(dataset, predictor, save_predictions=tmp_path / mode, pipeline=mode == "pipelined", progress=False)
        reports[mode], threads[mode] = json.dumps(report.metrics.as_dict(report.class_names)), predictor.threads
    assert reports["pipelined"] == reports["sequential"]
    assert _digests(tmp_path / "pipelined") == _digests(tmp_path / "sequential") and len(_digests(tmp_path / "sequential")) == 3
    assert threads == {"pipelined": ["zsseg-prepare"] * 3, "sequential": ["MainThread"] * 3}


@pytest.mark.parametrize("pipeline", [True, False])
def test_evaluate_stops_at_an_image_that_fails_to_prepare_and_leaves_no_worker(clip, pipeline):
    dataset = subset("camvid", "val", 3)
    predictor = _Recording(Segmenter(clip=clip, proposals="selective-search", max_size=96, max_proposals=20),
                           dataset.vocabulary, fail_on=2)
    with pytest.raises(ZssegError, match="this image cannot be prepared"):
        evaluate_predictor(dataset, predictor, pipeline=pipeline, progress=False)
    assert predictor.finished == 1  # the first image, and nothing after the failing one
    assert len(predictor.threads) in ((2, 3) if pipeline else (2,))  # the worker may have prepared the third already
    assert not any(thread.name == "zsseg-prepare" for thread in threading.enumerate())


def test_pseudo_labels_pipelined_equal_the_sequential_run(clip, tmp_path):
    dataset = subset("coco-stuff", "train", 3)
    segmenter = Segmenter(clip=clip, proposals="selective-search", max_size=96, max_proposals=20)
    for mode in ("pipelined", "sequential"):
        report = pseudo_label(dataset, segmenter, tmp_path / mode, limit=3, pipeline=mode == "pipelined", progress=False)
        assert report.labelled == 3
    labels = {mode: {name: digest for name, digest in _digests(tmp_path / mode).items() if name.endswith(".png")}
              for mode in ("pipelined", "sequential")}
    assert len(labels["pipelined"]) == 3 and labels["pipelined"] == labels["sequential"]


def test_eval_and_pseudo_label_take_no_pipeline():
    for command in (["eval", "--dataset", "camvid"], ["pseudo-label", "--dataset", "coco-stuff", "--output-dir", "x"]):
        assert _parser().parse_args([*command, "--no-pipeline"]).pipeline is False
        assert _parser().parse_args(command).pipeline is True
