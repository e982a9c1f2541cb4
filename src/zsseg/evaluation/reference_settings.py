"""The reference code's test settings for each benchmark, which `zsseg eval` applies by default.

The paper's numbers come from the authors' code (MendelXu/zsseg.baseline), whose test configs
set, per benchmark: the test size (shorter side, longer side at most), Eq. 1's mask threshold
(`MASK_THR`), the ensemble weight lambda (`CLIP_ENSEMBLE_WEIGHT`), which classes count as seen
in the ensemble (a dataset's `trainable_flag`: only COCO-Stuff's and VOC's registrations have
one, so on every other benchmark each class is unseen), the class names put into the prompts
(each whole, e.g. "road, route"), and the prompt. `SETTINGS` is that table, one row per
benchmark and protocol, each naming the config it comes from; rows for benchmarks the reference
never registered say so and what they follow instead.

`zsseg eval` uses a row unless a flag overrides one of its entries, and records every setting
in its JSON. `zsseg segment` on a user's own images keeps zsseg's defaults (`zsseg.segmenter`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources

from ..errors import ZssegError
from ..data.vocabulary import Vocabulary

#: Prompt entries: "network" means the prompt the proposal network carries (a learned prompt in
#: the authors' zero-shot checkpoint), used for both its classifier and Eq. 1.
NETWORK_PROMPT = "network"
#: With no network to carry a prompt (training-free proposals), "network" falls back to the
#: paper's single prompt.
FALLBACK_PROMPT = "single"

_REF = "MendelXu/zsseg.baseline configs/"


@dataclass(frozen=True)
class BenchmarkSettings:
    """How the reference code tests on one benchmark under one protocol.

    Attributes:
        test_size: (shorter side, longer side at most) of the image the network and Eq. 1 see
            (detectron2's `ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`).
        mask_threshold: Eq. 1 binarises each mask at this value (`MASK_THR`).
        ensemble_weight: lambda of the ensemble with the network's classifier.
        seen: "split": the benchmark's zero-shot seen classes are seen (its `trainable_flag`),
            the rest unseen; "none": every class is unseen, p = p_net^(1-l) * p_clip^l.
        class_names: the vocabulary file (under zsseg/vocabularies) of the class strings the
            reference puts into the prompts, one whole string per class (no synonym split).
        prompt: the text prompt of both the network's classifier and Eq. 1: a template set or
            template, or "network" (the prompt the network carries).
        source: the reference config these come from, or what they follow where there is none.
    """

    test_size: tuple[int, int]
    mask_threshold: float
    ensemble_weight: float
    seen: str
    class_names: str
    prompt: str
    source: str

    def vocabulary(self) -> Vocabulary:
        """The benchmark's classes as the reference names them: each string whole."""
        text = resources.files("zsseg.data").joinpath("vocabularies", self.class_names).read_text("utf-8")
        return Vocabulary.verbatim([line for line in text.splitlines() if line.strip()], name=self.class_names)

    def segmenter_options(self, network: bool) -> dict:
        """`Segmenter` keyword arguments for these settings, with a trained proposal network
        (`network`) or training-free proposals (whose lambda does not apply and whose
        "network" prompt falls back to `FALLBACK_PROMPT`)."""
        prompt = network_prompt = None
        if self.prompt != NETWORK_PROMPT:
            prompt = network_prompt = self.prompt
        elif not network:
            prompt = FALLBACK_PROMPT
        return {
            "test_size": self.test_size[0],
            "max_size": self.test_size[1],
            "mask_threshold": self.mask_threshold,
            "ensemble_weight": self.ensemble_weight if network else None,
            "prompt": prompt,
            "network_prompt": network_prompt,
        }

    def seen_flags(self, unseen: tuple[int, ...], num_classes: int, rule: str | None = None) -> list[bool] | None:
        """`[C]` the classes the ensemble takes as seen under `rule` (default `seen`): "split",
        all but `unseen`; "none", no class; "names": None (the network's training names)."""
        rule = rule or self.seen
        if rule == "names":
            return None
        if rule == "split" and not unseen:
            raise ZssegError("seen classes 'split': this benchmark has no zero-shot split")
        hidden = set(unseen) if rule == "split" else set(range(num_classes))
        return [i not in hidden for i in range(num_classes)]

    def record(self) -> dict:
        return asdict(self)


_CROSS = dict(mask_threshold=0.5, seen="none", prompt="vild")  # every cross_dataset_test_only.yaml
SETTINGS: dict[tuple[str, str], BenchmarkSettings] = {
    ("coco-stuff", "zero-shot"): BenchmarkSettings(
        (640, 2560), 0.5, 0.8, "split", "coco-stuff-171.txt", NETWORK_PROMPT,
        _REF + "coco-stuff-164k-156/zero_shot_maskformer_R101c_bs32_60k.yaml"),
    ("coco-stuff", "cross-dataset"): BenchmarkSettings(
        (640, 2560), 0.5, 0.8, "split", "coco-stuff-171.txt", NETWORK_PROMPT,
        _REF + "coco-stuff-164k-156/zero_shot_maskformer_R101c_bs32_60k.yaml (COCO-Stuff's registration always carries "
        "trainable_flag)"),
    ("ade20k-150", "cross-dataset"): BenchmarkSettings(
        (512, 2048), **{**_CROSS, "mask_threshold": 0.4}, ensemble_weight=0.5, class_names="reference/ade20k-150.txt",
        source=_REF + "ade20k-150/cross_dataset_test_only.yaml; names: detectron2's ADE20K_SEM_SEG_CATEGORIES"),
    ("ade20k-847", "cross-dataset"): BenchmarkSettings(
        (512, 2048), **{**_CROSS, "mask_threshold": 0.3}, ensemble_weight=0.7, class_names="ade20k-847.txt",
        source=_REF + "ade20k-847/cross_dataset_test_only.yaml; names: MaskFormer's register_ade20k_full"),
    ("pascal-context-59", "cross-dataset"): BenchmarkSettings(
        (512, 2048), **_CROSS, ensemble_weight=0.4, class_names="reference/pascal-context-59.txt",
        source=_REF + "pcontext-59/cross_dataset_test_only.yaml; names: its register_pcontext.py"),
    ("pascal-context-459", "cross-dataset"): BenchmarkSettings(
        (512, 2048), **_CROSS, ensemble_weight=0.4, class_names="pascal-context-459.txt",
        source="no reference config (the reference registers no Pascal Context-459): Pascal Context-59's settings"),
    ("voc-20", "zero-shot"): BenchmarkSettings(
        (512, 2048), 0.5, 0.7, "split", "reference/voc-20.txt", NETWORK_PROMPT,
        _REF + "voc-11k-15/zero_shot_maskformer_R101c_bs16_20k.yaml (Eq. 1 takes its separate region adapter's learned "
        "prompt, which its checkpoint carries)"),
    ("voc-20", "cross-dataset"): BenchmarkSettings(
        (512, 2048), 0.5, 0.4, "split", "reference/voc-20.txt", NETWORK_PROMPT,
        _REF + "voc-11k-20/zero_shot_maskformer_R101c_bs16_test_only.yaml (VOC's registration always carries "
        "trainable_flag)"),
    ("voc-21", "zero-shot"): BenchmarkSettings(
        (512, 2048), 0.5, 0.7, "split", "voc-21.txt", NETWORK_PROMPT,
        "no reference config (the reference tests VOC without background): voc-20's"),
    ("voc-21", "cross-dataset"): BenchmarkSettings(
        (512, 2048), 0.5, 0.4, "split", "voc-21.txt", NETWORK_PROMPT,
        "no reference config (the reference tests VOC without background): voc-20's"),
    ("cityscapes", "cross-dataset"): BenchmarkSettings(
        (1024, 2048), **{**_CROSS, "mask_threshold": 0.3}, ensemble_weight=0.4, class_names="cityscapes-19.txt",
        source=_REF + "cityscapes-19/cross_dataset_maskformer_R101c_bs32_test_only.yaml; names: detectron2's Cityscapes"),
    ("camvid", "cross-dataset"): BenchmarkSettings(
        (640, 2560), **_CROSS, ensemble_weight=0.8, class_names="camvid-11.txt",
        source="no reference config (the reference never tests CamVid): its base test config's defaults"),
}


def benchmark_settings(dataset: str, protocol: str) -> BenchmarkSettings:
    """The reference's settings for `dataset` under `protocol`."""
    if (dataset, protocol) not in SETTINGS:
        protocols = sorted(p for d, p in SETTINGS if d == dataset)
        raise ZssegError(f"{dataset} has no {protocol} settings; its protocols: {', '.join(protocols) or 'none'}")
    return SETTINGS[(dataset, protocol)]


__all__ = ["BenchmarkSettings", "FALLBACK_PROMPT", "NETWORK_PROMPT", "SETTINGS", "benchmark_settings"]
