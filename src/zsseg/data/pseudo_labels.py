"""Pseudo-label folders (written by `zsseg pseudo-label`, `zsseg.training.self_training`) read as a
training dataset: the images of a benchmark split with the folder's label files as their labels.

    labels = load_pseudo_labels("runs/pl", load_dataset("coco-stuff", root, "train"))
    labels.dataset        # a SegmentationDataset whose label maps are the pseudo-labels
    labels.record()       # what a network trained on them stores of where they came from

A folder holds one `NAME.png` per image, in the dataset's own label encoding, and
`pseudo-labels.json` (its manifest: settings, class split, and whether it is complete).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .datasets import Sample, SegmentationDataset
from ..errors import SettingError, ZssegError, counted
from ..outputs.writers import written_by_zsseg

FORMAT = "zsseg-pseudo-labels/1"
MANIFEST_NAME = "pseudo-labels.json"


def read_manifest(folder: Path) -> dict:
    import json

    path = folder / MANIFEST_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZssegError(f"{folder} holds no {MANIFEST_NAME}: give the output folder of `zsseg pseudo-label`") from None
    except (OSError, ValueError) as error:
        raise ZssegError(f"cannot read {path}: {error}") from None
    if not written_by_zsseg(path) or not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ZssegError(f"{path} is not a zsseg pseudo-label manifest (format {FORMAT}); choose another folder")
    return record


@dataclass
class PseudoLabels:
    """A finished `pseudo_label` folder, ready to train on.

    Attributes:
        folder: where the label files are.
        manifest: its `pseudo-labels.json`.
        dataset: the pseudo-labelled images, with the folder's label files as their labels.
    """

    folder: Path
    manifest: dict
    dataset: SegmentationDataset

    def record(self) -> dict:
        """What a self-trained network stores of its pseudo-labels (`self_training`)."""
        m = self.manifest
        return {
            "pseudo_labels": str(self.folder),
            "dataset": m["dataset"],
            "split": m["split"],
            "num_images": m["num_images"],
            "reject_threshold": m["reject_threshold"],
            "seen_classes": m["seen_classes"],
            "unseen_classes": m["unseen_classes"],
            "labels_made_by": m["signature"]["model"],
        }


def load_pseudo_labels(folder: str | Path, dataset: SegmentationDataset) -> PseudoLabels:
    """The pseudo-labels in `folder` for the images of `dataset` (the split they were made on):
    refused if made for another dataset or split, or unfinished."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SettingError("pseudo_labels", f"{{setting}} {folder} is not a folder (give the output folder of `zsseg pseudo-label`)")
    manifest = read_manifest(folder)
    for key, have in (("dataset", dataset.name), ("split", dataset.split)):
        if manifest.get(key) != have:
            raise ZssegError(f"{folder} holds pseudo-labels of {manifest.get('dataset')} {manifest.get('split')}, not {dataset.name} {dataset.split}")
    count = int(manifest["num_images"])
    samples = dataset.samples[:count]
    if count > len(dataset) or samples[-1].name != manifest["signature"]["last_image"]:
        raise ZssegError(f"{folder} was made for other images of {dataset.name} {dataset.split} (the split has changed); pseudo-label it again")
    missing = [s.name for s in samples if not (folder / f"{s.name}.png").is_file()]
    if not manifest.get("complete") or missing:
        raise ZssegError(
            f"{folder} is unfinished ({count - len(missing)} of {counted(count, 'image')} labelled); "
            "rerun the `zsseg pseudo-label` command that made it to finish it"
        )
    labelled = SegmentationDataset(dataset.spec, dataset.root, dataset.split,
                                   [Sample(s.name, s.image, folder / f"{s.name}.png") for s in samples])
    return PseudoLabels(folder, manifest, labelled)


__all__ = ["FORMAT", "MANIFEST_NAME", "PseudoLabels", "load_pseudo_labels", "read_manifest"]
