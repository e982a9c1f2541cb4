"""Evaluation end to end on the real samples: the ground-truth oracle gives 100, saved
predictions re-score to the reported numbers, torchrun with 2 processes equals 1 process,
and bad inputs give clear errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, run, recorded
from zsseg.data.datasets import load_dataset
from zsseg.errors import ZssegError
from zsseg.evaluation.predictors import OraclePredictor, oracle_classes
from zsseg.evaluation.runner import evaluate_predictor
from zsseg.proposals import GroundTruthProposals, SelectiveSearch


@pytest.mark.parametrize(
    "name, split, protocol",
    [
        ("coco-stuff", "val", "zero-shot"),
        ("ade20k-150", "val", "cross-dataset"),
        ("voc-20", "val", "zero-shot"),
        ("voc-21", "val", "cross-dataset"),
        ("cityscapes", "train", "cross-dataset"),
        ("camvid", "val", "cross-dataset"),
    ],
)
def test_ground_truth_oracle_is_100(name, split, protocol):
    dataset = load_dataset(name, DATA, split)
    predictor = OraclePredictor(GroundTruthProposals(ignore_index=-1), dataset.num_classes)
    report = evaluate_predictor(dataset, predictor, protocol=protocol, limit=4, progress=False)
    m = report.metrics
    assert (m.mIoU, m.fwIoU, m.pAcc, m.mAcc) == (100.0, 100.0, 100.0, 100.0)
    assert report.num_images == 4
    if protocol == "zero-shot":
        assert m.mIoU_seen == 100.0 and (m.mIoU_unseen in (100.0, None))


def test_oracle_takes_the_majority_class_and_drops_masks_on_ignored_pixels():
    label = np.array([[0, 0, 1], [2, -1, -1]])
    masks = torch.tensor(
        [
            [[1, 1, 1], [0, 0, 0]],  # two 0s, one 1 -> class 0
            [[0, 0, 0], [0, 1, 1]],  # only ignored pixels -> dropped
            [[0, 0, 0.6], [0.7, 0, 0]],  # one 1, one 2 -> tie, lower index: class 1
            [[0, 0, 0.4], [0.7, 0, 0]],  # 0.4 is outside the binarised mask -> class 2
        ]
    ).float()
    probs, keep = oracle_classes(masks, label, 3)
    assert keep.tolist() == [True, False, True, True]
    assert probs.argmax(dim=1).tolist() == [0, 1, 2]


def test_training_free_proposals_score_between_nothing_and_perfect():
    dataset = load_dataset("ade20k-150", DATA)
    report = evaluate_predictor(dataset, OraclePredictor(SelectiveSearch(max_proposals=50), dataset.num_classes), limit=2, progress=False)
    assert 5.0 < report.metrics.pAcc < 100.0 and 0.0 < report.metrics.mIoU < 100.0


def test_image_and_label_of_different_sizes(tmp_path):
    root = tmp_path
    (root / "CamVid" / "val").mkdir(parents=True)
    (root / "CamVid" / "valannot").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "CamVid/val/a.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(root / "CamVid/valannot/a.png")
    dataset = load_dataset("camvid", root)
    with pytest.raises(ZssegError, match="is 6x4 but its label map .* is 5x4"):
        evaluate_predictor(dataset, OraclePredictor(GroundTruthProposals(ignore_index=-1), 11), progress=False)


def rescore(prediction_dir, dataset, limit):
    """mIoU recomputed from the saved PNGs, independently of zsseg.evaluation.metrics."""
    inter = np.zeros(dataset.num_classes)
    gt_area = np.zeros(dataset.num_classes)
    pred_area = np.zeros(dataset.num_classes)
    for sample in dataset.samples[:limit]:
        raw = np.array(Image.open(sample.label)).astype(np.int64)
        gt = np.where(raw == 0, -1, raw - 1)  # ADE20K: 0 = other, 1..150 = classes
        pred = np.array(Image.open(prediction_dir / f"{sample.name}.png")).astype(np.int64)
        pred[pred == 255] = -1
        scored = gt >= 0
        for c in range(dataset.num_classes):
            g, p = (gt == c) & scored, (pred == c) & scored
            inter[c] += (g & p).sum()
            gt_area[c] += g.sum()
            pred_area[c] += p.sum()
    present = gt_area > 0
    return 100 * np.mean(inter[present] / (gt_area + pred_area - inter)[present])


def test_cli_saved_predictions_rescore_to_the_reported_miou(tmp_path):
    out, predictions = tmp_path / "scores.json", tmp_path / "predictions"
    proc = run(["eval", "--dataset", "ade20k-150", "--data-root", str(DATA), "--oracle", "--proposals", "selective-search",
                "--max-proposals", "20", "--limit", "3", "--output", str(out), "--save-predictions", str(predictions)])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    settings = recorded(report)
    dataset = load_dataset("ade20k-150", DATA)
    assert sorted(p.name for p in predictions.iterdir()) == [f"{s.name}.png" for s in dataset.samples[:3]]
    assert report["num_images"] == 3 and settings["max_proposals"] == 20 and settings["oracle"] is True
    assert set(report) >= {"mIoU", "fwIoU", "pAcc", "mAcc", "per_class_iou", "num_images"}
    assert report["mIoU"] == pytest.approx(rescore(predictions, dataset, 3), abs=1e-9)
    assert report["per_class_iou"]["wall"] is not None and len(report["per_class_iou"]) == 150
    assert f"mIoU {report['mIoU']:.2f}" in proc.stdout


def test_cli_ground_truth_oracle_is_100(tmp_path):
    out = tmp_path / "scores.json"
    proc = run(["eval", "--dataset", "voc-20", "--data-root", str(DATA), "--oracle", "--proposals", "ground-truth",
                "--protocol", "zero-shot", "--output", str(out), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    settings = recorded(report)
    assert report["num_images"] == 14 and report["mIoU"] == 100.0 and report["hIoU"] == 100.0
    assert report["mIoU_seen"] == 100.0 and report["mIoU_unseen"] == 100.0
    assert settings["clip"] is None


def test_cli_clip_pipeline_zero_shot(clip_dir, tmp_path):
    out = tmp_path / "scores.json"
    proc = run(["eval", "--dataset", "coco-stuff", "--data-root", str(DATA), "--clip", str(clip_dir), "--limit", "2",
                "--max-size", "160", "--max-proposals", "8", "--prompt", "single", "--protocol", "zero-shot", "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    settings = recorded(report)
    assert settings["clip"] == str(clip_dir) and settings["oracle"] is False
    assert {"mIoU_seen", "mIoU_unseen", "hIoU"} <= set(report) and 0.0 <= report["mIoU"] <= 100.0


def normalised(report):
    return {k: v for k, v in report.items() if k not in ("seconds_per_image", "wall_seconds", "processes")}


@pytest.mark.parametrize(
    "args",
    [
        ["--dataset", "ade20k-150", "--oracle", "--proposals", "selective-search", "--max-proposals", "30", "--limit", "5",
         "--test-size", "160", "--max-size", "256"],  # small: sharding, not size, is the point
        ["--dataset", "voc-20", "--protocol", "zero-shot", "--max-size", "128", "--max-proposals", "6", "--prompt", "single", "--limit", "3"],
    ],
    ids=["oracle", "clip"],
)
def test_two_processes_under_torchrun_equal_one(args, clip_dir, tmp_path):
    common = ["eval", *args, "--data-root", str(DATA), "--clip", str(clip_dir)]
    single = run([*common, "--output", str(tmp_path / "one.json")], env={"OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr
    double = run(["--standalone", "--nproc_per_node", "2", "-m", "zsseg", *common, "--output", str(tmp_path / "two.json"),
                  "--save-predictions", str(tmp_path / "predictions")],
                 module=("-m", "torch.distributed.run"))
    assert double.returncode == 0, double.stderr
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["processes"] == 2 and one["processes"] == 1
    assert normalised(two) == normalised(one)
    assert len(list((tmp_path / "predictions").iterdir())) == one["num_images"]  # both processes wrote theirs


def test_a_failure_on_one_process_stops_all_with_its_message(tmp_path):
    """Image 1 (process 1 of 2) has a label map of the wrong size: no hang, both stop, exit 2."""
    (tmp_path / "CamVid" / "val").mkdir(parents=True)
    (tmp_path / "CamVid" / "valannot").mkdir(parents=True)
    for i, width in enumerate([6, 5, 6, 6]):
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / f"CamVid/val/{i}.png")
        Image.fromarray(np.zeros((4, width), np.uint8)).save(tmp_path / f"CamVid/valannot/{i}.png")
    proc = run(["--standalone", "--nproc_per_node", "2", "-m", "zsseg", "eval", "--dataset", "camvid",
                "--data-root", str(tmp_path), "--oracle", "--proposals", "ground-truth"],
               module=("-m", "torch.distributed.run"))
    assert proc.returncode != 0
    assert "zsseg: error (process 1):" in proc.stderr and "is 6x4 but its label map" in proc.stderr
    # Process 0 stops too: with its own message, unless torchrun's clean-up signal (sent when
    # process 1 exits) comes first. The only traceback is torchrun's own failure report.
    assert "zsseg: error (process 0): stopped: process 1 failed" in proc.stderr or "SIGTERM" in proc.stderr
    assert "exitcode  : 2" in proc.stderr
    assert proc.stderr.count("Traceback") <= 1 and "zsseg/evaluation.py" not in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "coco-stuff", "--data-root", "/nonexistent"], "data root /nonexistent is not a folder"),
        (["--dataset", "ade20k-847"], "ADE20K_2021_17_01/annotations_detectron2/validation is missing"),
        (["--dataset", "ade20k-150", "--protocol", "zero-shot"], "zero-shot protocol has seen/unseen splits for coco-stuff"),
        (["--dataset", "ade20k-150", "--split", "test"], "ade20k-150 has splits train, val; got 'test'"),
        (["--dataset", "ade20k-150", "--limit", "0", "--oracle"], "argument --limit: must be at least 1"),
        (["--dataset", "ade20k-150", "--oracle", "--max-proposals", "0"], "argument --max-proposals: must be at least 1"),
    ],
)
def test_cli_bad_inputs(args, message, capsys, monkeypatch):
    from zsseg.cli import main

    monkeypatch.setenv("DETECTRON2_DATASETS", str(DATA))
    try:
        status = main(["eval", *args])
    except SystemExit as usage_error:  # flags argparse checks itself
        status = usage_error.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_output_checked_before_evaluating(tmp_path, capsys):
    from zsseg.cli import main

    common = ["eval", "--dataset", "voc-20", "--data-root", str(DATA), "--oracle", "--proposals", "ground-truth"]
    assert main([*common, "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main([*common, "--output", str(tmp_path / "a-file" / "x.json")]) == 2  # its folder cannot be made
    assert "a-file exists and is not a folder" in capsys.readouterr().err
    # A missing folder is made, as --save-predictions and segment --out make theirs.
    assert main([*common, "--limit", "1", "--output", str(tmp_path / "missing" / "x.json")]) == 0
    assert (tmp_path / "missing" / "x.json").is_file()
    (tmp_path / "file").write_text("")
    assert main([*common, "--save-predictions", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
