"""zsseg against the authors' code (MendelXu/zsseg.baseline), stage by stage, on the same weights.

`$ZSSEG_REFERENCE_PARITY` (default ../shared/reference-parity) holds outputs of the reference
code on seeded random weights, real images and real labels; its README says what each tensor
is. Every case its `manifest.json` lists runs here by its `kind`. The weights are rebuilt by the
folder's own `weights.py` from the case's keys file and seed, saved as a detectron2 checkpoint
(`{"model": state_dict}`), and loaded through zsseg's public path for the authors' checkpoints
(`MaskFormerProposals("model_final.pth")`), exactly as a user's download would be.

Settings. A case's sidecar holds the reference config it ran with (`cfg`); each of its values is
translated to zsseg's setting (`reference_options`), and a value zsseg has no translation for
fails the test, naming it. A case may also state settings in the manifest, at its top level
(lower-case reference names such as `"clip_ensemble_weight": 0.0`) or in an `"overrides"`
object: each must be a reference setting this test knows and agree with the sidecar. Where the
manifest does not override a setting, zsseg's benchmark table (`zsseg.evaluation.reference_settings`, what
`zsseg eval` applies) must give the reference config's value.

Stage by stage. Each stage is fed the reference's own input where zsseg's input would differ by
float noise, so that no stage inherits the noise of the one before: Eq. 1 and everything after
it get the reference's mask probabilities (its recorded mask logits, upsampled and cropped by
the same operations it runs), because a mask pixel within float noise of the Eq. 1 threshold
could otherwise binarise the other way and change a whole crop. zsseg's own masks are compared
with the reference's as probabilities, where that noise stays noise.

Tolerances, from the float32 operations involved (both programs run the same operations in
possibly different summation orders; float32's unit roundoff is 6e-8):

- network outputs (query embeddings ~1, class logits ~10, mask logits ~20) after a ResNet-101
  and a 6-layer transformer: `LOGIT_ATOL` = 1e-3, two orders of magnitude above the roundoff
  such depths accumulate (~1e-5 relative) and twenty times below the smallest difference
  between two query rows (0.02-0.07 here, from the README), so a permuted or mixed-up row fails;
- mask probabilities: sigmoid's slope is at most 1/4, so `LOGIT_ATOL / 4`;
- text features (unit vectors, one 12-layer tower): 1e-5;
- Eq. 1's crops (the same pixels, masks and bicubic resize; the fill blended before or after
  normalising): 1e-5 on values of about 2;
- region logits (100 x cosine through ViT-B/16 on crops equal to 1e-5): `LOGIT_ATOL`;
- probabilities (softmax, then the ensemble's powers with exponents summing to 1): an error of
  at most d in every logit moves a log-probability by at most 2d, so `PROB_RTOL` =
  exp(2 LOGIT_ATOL) - 1, relative;
- final scores (positive sums of mask x probability, then a bilinear resize, both convex in the
  probabilities): `PROB_RTOL` plus the float32 roundoff of a 100-term sum, `SUM_RTOL`;
- label maps: equal wherever zsseg's own best and second-best scores are further apart than
  the two scores' tolerances together; elsewhere either label is within float noise.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import DATA, SHARED, TOKENIZER

PARITY = Path(os.environ.get("ZSSEG_REFERENCE_PARITY", SHARED / "reference-parity"))

LOGIT_ATOL = 1e-3
MASK_ATOL = LOGIT_ATOL / 4
TEXT_ATOL = 1e-5
CROP_ATOL = 1e-5
PROB_RTOL = math.expm1(2 * LOGIT_ATOL)
SUM_RTOL = PROB_RTOL + 100 * 6e-8

# What a manifest entry may hold besides reference settings: what the case is, and notes.
CASE_KEYS = {"name", "kind", "tensors", "sidecar", "keys_file", "weights_seed", "benchmark", "protocol", "prompt", "image",
             "overrides", "about", "description", "notes", "comment"}
# The reference settings this test translates (lower-case last component of the config name).
SETTINGS = {
    "min_size_test", "max_size_test", "mask_thr", "mask_fill", "mask_expand_ratio", "mask_matting", "region_resized",
    "clip_ensemble", "clip_ensemble_weight", "prompt_learner", "predefined_prompt_templates", "prompt_dim", "prompt_shape",
    "prompt_checkpoint", "clip_model_name", "seperate_adapter", "pixel_mean", "pixel_std", "format", "size_divisibility",
    "num_object_queries", "num_classes", "sem_seg_postprocessing_before_inference", "panoptic_on", "object_mask_threshold",
    "overlap_threshold", "templates",
}
# Of these, some leave the semantic segmentation as it is whatever their value: the zero-shot model
# post-processes its masks to the input size before inference either way (its forward never reads
# SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE), the panoptic ones only add a panoptic output, and the
# CLIP's name and a prompt checkpoint are overwritten by the state dict the case loads.
IMAGENET_MEAN, IMAGENET_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def _manifest() -> list[dict]:
    path = PARITY / "manifest.json"
    if not path.is_file():
        pytest.fail(f"reference parity data not found: {path}; set ZSSEG_REFERENCE_PARITY", pytrace=False)
    return json.loads(path.read_text())["cases"]


CASES = _manifest() if (PARITY / "manifest.json").is_file() else [{"name": "missing", "kind": "missing"}]


def _sidecar(case: dict) -> dict:
    return json.loads((PARITY / case["sidecar"]).read_text())


def _tensors(case: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(PARITY / case["tensors"]))


def setting_name(key: str) -> str:
    """A reference config name as this test keys it: "MODEL.CLIP_ADAPTER.MASK_THR" -> "mask_thr"."""
    return key.rsplit(".", 1)[-1].lower()


def manifest_settings(case: dict) -> dict:
    """The reference settings a manifest entry states, at its top level or in "overrides"; a key
    this test does not know fails, naming it."""
    stated = {}
    for key, value in case.items():
        if key in CASE_KEYS:
            continue
        if setting_name(key) not in SETTINGS:
            pytest.fail(f"{case.get('name')}: manifest key '{key}' is neither a case field nor a reference setting this test knows",
                        pytrace=False)
        stated[setting_name(key)] = value
    overrides = case.get("overrides", {})
    if not isinstance(overrides, dict):
        pytest.fail(f"{case.get('name')}: \"overrides\" must be an object of reference settings", pytrace=False)
    for key, value in overrides.items():
        if setting_name(key) not in SETTINGS:
            pytest.fail(f"{case.get('name')}: override '{key}' is not a reference setting this test knows", pytrace=False)
        stated[setting_name(key)] = value
    return stated


def flat_config(cfg: dict) -> dict:
    """The sidecar's `cfg` as {setting name: value}; the separate region adapter's settings
    (`CLIP_ADAPTER.REGION_CLIP_ADAPTER`) under "region_" names."""
    flat = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            name = setting_name(key)
            if isinstance(value, dict):
                walk(value, "region_" if name == "region_clip_adapter" else prefix)
            else:
                flat[prefix + name] = value

    walk(cfg, "")
    return flat


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def mask_fill(value) -> str:
    """MASK_FILL as zsseg's `CropConfig.fill`: the name, or the fill values the adapter made of it."""
    from zsseg.models.base import CLIP_MEAN

    if value in ("mean", "zero"):
        return value
    if _same(list(value), [255.0 * c for c in CLIP_MEAN]):
        return "mean"
    if _same(list(value), [0.0, 0.0, 0.0]):
        return "zero"
    pytest.fail(f"mask fill {value} is neither the reference's 'mean' nor its 'zero'", pytrace=False)


def prompt_of(learner: str, templates) -> object:
    """A reference prompt learner as a zsseg prompt (None: the checkpoint's learned prompt)."""
    if learner == "learnable":
        return None
    if learner == "predefined":
        return templates[0] if len(templates) == 1 else tuple(templates)
    if learner in ("imagenet", "vild"):
        return learner
    pytest.fail(f"prompt learner '{learner}' is not one of the reference's", pytrace=False)


def reference_options(flat: dict, network) -> dict:
    """`Segmenter` keyword arguments that run what the reference config `flat` runs; every
    setting is translated or checked, and an unknown one fails the test."""
    from zsseg.classification.regions import CropConfig

    unknown = sorted(k for k in flat if k not in SETTINGS and k.removeprefix("region_") not in SETTINGS)
    if unknown:
        pytest.fail(f"reference setting {unknown[0]} has no zsseg translation in this test", pytrace=False)
    assert _same(flat.get("pixel_mean", IMAGENET_MEAN), IMAGENET_MEAN) and _same(flat.get("pixel_std", IMAGENET_STD), IMAGENET_STD), \
        "zsseg's network normalises with ImageNet's mean and std, as every reference config"
    assert flat.get("format", "RGB") == "RGB" and flat.get("size_divisibility", 32) == 32
    if "num_object_queries" in flat:
        assert flat["num_object_queries"] == network.model.config.num_queries
    if "prompt_dim" in flat:
        assert flat["prompt_dim"] == network.clip.token_width
    options = {"test_size": flat["min_size_test"], "max_size": flat["max_size_test"]}
    options["crop"] = CropConfig(threshold=flat.get("mask_thr", 0.5), fill=mask_fill(flat.get("mask_fill", "mean")),
                                 expand_ratio=flat.get("mask_expand_ratio", 1.0), matting=flat.get("mask_matting", False),
                                 resize=flat.get("region_resized", True))
    weight = flat.get("clip_ensemble_weight", 0.8)
    if not flat.get("clip_ensemble", True):
        options["classifier"] = "network"
    elif weight == 0:
        options["ensemble_weight"] = 0.0  # the documented equivalent of --classifier clip: it must take the same branch
    elif weight < 0:
        options["classifier"] = "clip"
    else:
        options["ensemble_weight"] = weight
    learner = flat.get("prompt_learner", "imagenet")
    prompt = prompt_of(learner, flat.get("predefined_prompt_templates", ["a sculpture of a {}."]))
    options["network_prompt"] = prompt
    if flat.get("seperate_adapter", False):
        prompt = prompt_of(flat.get("region_prompt_learner", "predefined"), flat.get("region_predefined_prompt_templates",
                                                                                   ["a sculpture of a {}."]))
    options["prompt"] = prompt
    shapes = [("prompt_shape", network.trained.prompt)]
    if flat.get("seperate_adapter", False):
        shapes.append(("region_prompt_shape", network.trained.region_prompt))
    for key, learned in shapes:
        if key in flat and flat[key.replace("shape", "learner")] == "learnable":
            assert [int(learned.context.shape[0]), learned.suffix_length] == list(flat[key]), f"{key}: the checkpoint's prompt"
    return options


def check_manifest_against(case: dict, flat: dict) -> dict:
    """The manifest's stated settings, each checked against the reference config it describes."""
    stated = manifest_settings(case)
    for key, value in stated.items():
        if key == "mask_fill":
            assert mask_fill(value) == mask_fill(flat[key]), f"{case['name']}: manifest {key} {value}, the reference ran {flat[key]}"
        else:
            assert key in flat and _same(value, flat[key]), f"{case['name']}: manifest {key} {value}, the reference ran {flat.get(key)}"
    return stated


@pytest.fixture(scope="module")
def reference_networks(tmp_path_factory):
    """`network(case)`: the `MaskFormerProposals` of the case's weights, loaded from a saved
    checkpoint through zsseg's public loader; built once per (keys file contents, seed)."""
    from zsseg.proposals import MaskFormerProposals

    spec = importlib.util.spec_from_file_location("reference_parity_weights", PARITY / "weights.py")
    weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights)
    folder = tmp_path_factory.mktemp("reference-checkpoints")
    loaded: dict[tuple, object] = {}

    def network(case: dict):
        keys = (PARITY / case["keys_file"]).read_bytes()
        key = (keys, case["weights_seed"])
        if key not in loaded:
            path = folder / f"model_final_{len(loaded)}.pth"
            state = weights.reference_weights(str(PARITY / case["keys_file"]), case["weights_seed"])
            torch.save({"model": state}, path)
            del state
            loaded[key] = MaskFormerProposals(path, tokenizer=str(TOKENIZER))
            path.unlink()
        return loaded[key]

    return network


def close(name: str, mine: torch.Tensor, theirs: torch.Tensor, atol: float = 0.0, rtol: float = 0.0) -> None:
    mine, theirs = mine.detach().double().cpu(), theirs.detach().double().cpu()
    assert mine.shape == theirs.shape, f"{name}: shape {tuple(mine.shape)}, reference {tuple(theirs.shape)}"
    if mine.numel() == 0:
        return
    worst = (mine - theirs).abs() - rtol * theirs.abs()
    assert float(worst.max()) <= atol, f"{name}: max abs difference {float((mine - theirs).abs().max()):.3g} (atol {atol}, rtol {rtol})"


def batch_of(crops: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Eq. 1's crops as one batch (crops kept at their own sizes are a list of `[1, 3, h, w]`)."""
    return torch.cat(crops) if isinstance(crops, list) else crops


def reference_masks(pred_masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The reference's mask probabilities at the input size from its mask logits: upsampled to
    the padded size, cropped, sigmoid (zero_shot_mask_former_model.py lines 208-245)."""
    padded = tuple(4 * side for side in pred_masks.shape[-2:])
    logits = F.interpolate(pred_masks[None], size=padded, mode="bilinear", align_corners=False)[0]
    return logits[:, :height, :width].sigmoid()


def check_inference(case: dict, network, monkeypatch) -> None:
    from zsseg.classification import regions as region_classification
    from zsseg.evaluation.reference_settings import NETWORK_PROMPT, benchmark_settings
    from zsseg.data.datasets import DATASETS
    from zsseg.data.images import read_image
    from zsseg.prompts.encoding import PromptEncoder
    from zsseg.segmenter import Segmenter

    gold, side = _tensors(case), _sidecar(case)
    dataset = DATASETS[case["benchmark"]]
    protocol = case.get("protocol") or ("zero-shot" if side.get("trainable_flag") is not None else "cross-dataset")
    settings = benchmark_settings(dataset.name, protocol)
    flat = flat_config(side["cfg"])
    stated = check_manifest_against(case, flat)
    options = reference_options(flat, network)
    if case.get("prompt") and "learn" not in case["prompt"]:
        assert options["prompt"] == case["prompt"] or options["network_prompt"] == case["prompt"], "the manifest's prompt"

    # Where the case does not override them, zsseg's benchmark table holds the reference config's
    # settings: what `zsseg eval` applies (items 1, 2, 5 of the first parity issue).
    preset = settings.segmenter_options(network=True)
    for ours, theirs in (("test_size", "min_size_test"), ("max_size", "max_size_test"), ("mask_threshold", "mask_thr"),
                         ("ensemble_weight", "clip_ensemble_weight")):
        if theirs not in stated:
            assert _same(preset[ours], flat[theirs]), f"the benchmark's {ours} is {preset[ours]}, the reference config's {flat[theirs]}"
    if settings.prompt != NETWORK_PROMPT and not stated.keys() & {"prompt_learner", "predefined_prompt_templates"}:
        assert options["prompt"] == settings.prompt == options["network_prompt"], "the benchmark's prompt is the reference config's"
    vocabulary = settings.vocabulary()
    assert vocabulary.names == side["class_names"], "the benchmark's class strings are the reference's"
    seen = settings.seen_flags(dataset.unseen_indices, len(vocabulary))
    assert seen == [bool(f) for f in (side["trainable_flag"] or [0] * len(vocabulary))], "seen classes = the trainable_flag"

    segmenter = Segmenter(proposals=network, seen=[name for name, flag in zip(vocabulary.names, seen) if flag], **options)
    height, width = gold["input_image"].shape[1:]
    theirs = reference_masks(gold["pred_masks"], height, width)
    predicted = {}
    original = type(network).predict

    def predict(self, image):  # the network runs; Eq. 1 and what follows get the reference's masks
        masks, embeddings = original(self, image)
        predicted.update(image=image, masks=masks, embeddings=embeddings)
        return theirs.clone(), embeddings

    monkeypatch.setattr(type(network), "predict", predict)
    crops_spy = Spy(monkeypatch, region_classification.RegionClassifier, "distinct_crops")
    scores_spy = Spy(monkeypatch, region_classification.RegionClassifier, "scores")
    outputs = []
    hook = network.model.predictor.register_forward_hook(lambda module, args, output: outputs.append(output[-1]))
    try:
        image = read_image(DATA / case["image"])
        result = segmenter.segment(image, vocabulary)
    finally:
        hook.remove()

    # Text features: Eq. 1's, the network classifier's, and "no object".
    network_prompts = segmenter.network_prompts or PromptEncoder(network.clip, options["network_prompt"] or network.trained.training_prompt,
                                                                 cache=False)
    network_text = network_prompts.encode_vocabulary(vocabulary)
    close("network text_features", network_text.features.cpu(), gold["text_features"][:-1], atol=TEXT_ATOL)
    region_text = "region_text_features" if "region_text_features" in gold else "text_features"
    text = segmenter.classifier.embed_vocabulary(vocabulary).features.cpu()
    close("Eq. 1 text_features", text, gold[region_text][: len(vocabulary)], atol=TEXT_ATOL)
    close("no-object text feature", F.normalize(network.model.void_embedding.detach(), dim=0)[None], gold["text_features"][-1:], atol=1e-6)
    # The network: its input (the reference's resize), query embeddings, class and mask logits, masks.
    assert tuple(predicted["image"].shape[:2]) == (height, width) == tuple(side["input_size_hw"])
    assert torch.equal(torch.from_numpy(predicted["image"]).permute(2, 0, 1), gold["input_image"]), "the reference's resized input"
    close("query_embeddings", outputs[0].class_embeddings[0], gold["query_embeddings"], atol=LOGIT_ATOL)
    class_logits = network.model.class_logits(predicted["embeddings"].to(network.device), network_text)
    close("class_logits", class_logits, gold["class_logits"], atol=LOGIT_ATOL)
    close("pred_masks", outputs[0].mask_logits[0], gold["pred_masks"], atol=LOGIT_ATOL)
    close("mask probabilities", predicted["masks"], theirs, atol=MASK_ATOL)
    # Eq. 1 on the reference's masks: valid masks, crops, region logits (no-object dropped before the softmax).
    if "clip_valid" in gold:
        distinct = crops_spy.calls[0]  # each distinct crop once: every kept mask's, in order, by `inverse`
        crops = ([distinct.crops[i] for i in distinct.inverse.tolist()] if isinstance(distinct.crops, list)
                 else distinct.crops[distinct.inverse])
        keep = distinct.keep
        assert torch.equal(keep.to(torch.uint8), gold["clip_valid"]), "Eq. 1's valid masks"
        if "clip_region_crops_first4" in gold:
            first = min(len(crops), gold["clip_region_crops_first4"].shape[0])
            close("region crops", batch_of(crops[:first]), gold["clip_region_crops_first4"][:first], atol=CROP_ATOL)
        close("region logits", scores_spy.calls[0][1], gold["clip_region_logits"][:, :-1], atol=LOGIT_ATOL)
    else:
        assert not crops_spy.calls, "the reference ran no Eq. 1 here (CLIP_ENSEMBLE off), so neither may zsseg"
    # The class scores of each mask the einsum takes (final_mask_cls), and Eq. 2's at the original size.
    # (The result holds every mask; Eq. 2 takes those kept, as the reference's einsum does.)
    kept_probs, kept_masks = result.region_probs[result.keep], result.masks[result.keep]
    close("final_mask_cls", kept_probs, gold["final_mask_cls"], atol=1e-12, rtol=PROB_RTOL)
    scores = torch.einsum("kc,khw->chw", kept_probs.double(), kept_masks.double())
    scores = F.interpolate(scores[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    ys, xs = gold["sem_seg_sample_positions"].T
    close("sem_seg samples", scores[:, ys, xs].T, gold["sem_seg_samples"], atol=1e-12, rtol=SUM_RTOL)
    top = scores.topk(2, dim=0).values
    del scores
    close("sem_seg max", top[0], gold["sem_seg_max"], atol=1e-12, rtol=SUM_RTOL)
    decided = (top[0] - top[1]) > 2 * SUM_RTOL * top[0]
    labels = torch.from_numpy(result.label_map).long()
    wrong = decided & (labels != gold["sem_seg_argmax"].long())
    assert not bool(wrong.any()), f"{int(wrong.sum())} pixels whose best class is clear take another label than the reference's"


class Spy:
    """Records what a function returns while the pipeline runs (the reference's stage tensors)."""

    def __init__(self, monkeypatch, owner, name: str):
        self.calls: list = []
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            self.calls.append(result)
            return result

        monkeypatch.setattr(owner, name, wrapper)


def check_text_features(case: dict, network) -> None:
    from zsseg.evaluation.reference_settings import benchmark_settings
    from zsseg.prompts.encoding import PromptEncoder, load_prompt

    gold, side = _tensors(case), _sidecar(case)
    flat = flat_config(side["cfg"])
    check_manifest_against(case, flat)
    options = reference_options(flat, network)
    prompt = network.trained.training_prompt if options["network_prompt"] is None else load_prompt(options["network_prompt"])
    names = benchmark_settings(case["benchmark"], "zero-shot" if side.get("trainable_flag") else "cross-dataset").vocabulary()
    assert names.names == side.get("class_names", names.names)
    features = PromptEncoder(network.clip, prompt, cache=False).encode_vocabulary(names).features.cpu()
    close("text_features", features, gold["text_features"][:-1], atol=TEXT_ATOL)
    close("no-object text feature", F.normalize(network.model.void_embedding.detach(), dim=0)[None], gold["text_features"][-1:], atol=1e-6)


def check_criterion(case: dict) -> None:
    from zsseg.networks.maskformer.config import TrainConfig
    from zsseg.networks.maskformer.criterion import matching_cost, set_loss
    from zsseg.training.proposal_data import semantic_target

    gold, side = _tensors(case), _sidecar(case)
    train = TrainConfig()  # the paper's: loss weights, no-object weight, and the reference's loss pixels
    assert train.loss_pixels == "all"
    assert (train.class_weight, train.mask_weight, train.dice_weight) == tuple(side["matcher"][k] for k in ("cost_class", "cost_mask", "cost_dice"))
    assert train.no_object_weight == pytest.approx(side["eos_coef"])
    targets = []
    maps = f"_labelmap_{side['num_classes']}"  # the targets in the training classes' indices
    for b in range(len([k for k in gold if k.endswith(maps)])):
        label = gold[f"target{b}{maps}"].long()
        target = semantic_target(torch.where(label == 255, -1, label).numpy(), train.loss_pixels)
        assert torch.equal(target.classes, gold[f"target{b}_labels"])
        targets.append(target)
    num_masks = float(sum(len(t.classes) for t in targets))
    assert num_masks == side["num_masks_normaliser"]
    weights = {"loss_ce": train.class_weight, "loss_mask": train.mask_weight, "loss_dice": train.dice_weight}
    ours = {"ce": "loss_ce", "focal": "loss_mask", "dice": "loss_dice"}
    total = 0.0
    layers = sorted({k.split("_pred_logits")[0] for k in gold if k.endswith("_pred_logits")})
    for layer in layers:
        logits, masks = gold[f"{layer}_pred_logits"].float(), gold[f"{layer}_pred_masks"].float()
        suffix = "" if layer == "final" else f"_{layer.removeprefix('aux')}"
        for b, target in enumerate(targets):
            cost = matching_cost(logits[b], masks[b], target, train.class_weight, train.mask_weight, train.dice_weight)
            close(f"{layer} cost b{b}", cost, gold[f"{layer}_cost_b{b}"], atol=1e-4)
        losses = set_loss(logits, masks, targets, num_masks, train.no_object_weight, train.class_weight, train.mask_weight, train.dice_weight)
        for term, name in ours.items():
            close(f"loss/{name}{suffix}", losses[term], gold[f"loss/{name}{suffix}"], atol=1e-6, rtol=1e-5)
            total += weights[name] * float(losses[term])
    assert total == pytest.approx(float(gold["weighted_loss_total"]), rel=1e-5)


def check_matching(case: dict) -> None:
    """The Hungarian assignment of every layer and image equals the reference's."""
    from zsseg.networks.maskformer.config import TrainConfig
    from zsseg.networks.maskformer.criterion import hungarian_match
    from zsseg.training.proposal_data import semantic_target

    gold, side = _tensors(case), _sidecar(case)
    train = TrainConfig()
    maps = f"_labelmap_{side['num_classes']}"
    layers = sorted({k.split("_pred_logits")[0] for k in gold if k.endswith("_pred_logits")})
    for layer in layers:
        for b in range(len([k for k in gold if k.endswith(maps)])):
            label = gold[f"target{b}{maps}"].long()
            target = semantic_target(torch.where(label == 255, -1, label).numpy(), train.loss_pixels)
            rows, cols = hungarian_match(gold[f"{layer}_pred_logits"][b].float(), gold[f"{layer}_pred_masks"][b].float(), target,
                                         train.class_weight, train.mask_weight, train.dice_weight)
            mine = sorted(zip(rows.tolist(), cols.tolist()))
            theirs = sorted(zip(gold[f"{layer}_indices_b{b}_query"].tolist(), gold[f"{layer}_indices_b{b}_target"].tolist()))
            assert mine == theirs, f"{layer} image {b}: assignment differs"


def check_evaluator(case: dict) -> None:
    from zsseg.evaluation.reference_settings import benchmark_settings
    from zsseg.data.datasets import DATASETS
    from zsseg.evaluation.metrics import ConfusionMatrix, compute_metrics
    from zsseg.data.vocabulary import Vocabulary

    gold, side = _tensors(case), _sidecar(case)
    num_classes, ignore = side["num_classes"], side["ignore_label"]
    sets = side["evaluation_set"]
    # The evaluator's dataset metadata: the benchmark whose zero-shot split is its "base" set.
    matches = [spec for spec in DATASETS.values() if spec.unseen and len(Vocabulary.preset(spec.vocabulary)) == num_classes
               and sorted(sets["base"]) == [i for i in range(num_classes) if i not in spec.unseen_indices]]
    assert matches, "no zsseg benchmark has the evaluator's classes and seen split"
    spec = matches[0]
    vocabulary = benchmark_settings(spec.name, "zero-shot").vocabulary()
    unseen = spec.unseen_indices
    assert sorted(sets["base"]) == [i for i in range(num_classes) if i not in unseen], "zsseg's seen classes are the reference's"
    extra = {name: [vocabulary.names.index(n) for n in names] for name, names in spec.unseen_sets.items()}
    assert {k: sorted(v) for k, v in extra.items()} == {k: sorted(v) for k, v in sets.items() if k != "base"}

    def matrix(pairs: list[int]) -> ConfusionMatrix:
        m = ConfusionMatrix(num_classes)
        for i in pairs:
            gt = gold[f"pair{i}_gt"].long().numpy()
            m.update(np.where(gt == ignore, -1, gt), gold[f"pair{i}_pred"].numpy())
        return m

    for tag in [k.removesuffix("_metrics") for k in gold if k.endswith("_metrics")]:
        pairs = [int(tag.removeprefix("pair"))] if tag.startswith("pair") else list(range(len(side["pairs"])))
        m = matrix(pairs)
        # zsseg's matrix is [ground truth, prediction]; the reference's [prediction, ground truth] plus an ignore row/column.
        assert np.array_equal(m.counts[:, :num_classes].T, gold[f"{tag}_conf_matrix"][:-1, :-1].numpy()), f"{tag}: confusion matrix"
        metrics = compute_metrics(m, unseen, extra)
        mine = {"mIoU": metrics.mIoU, "fwIoU": metrics.fwIoU, "mACC": metrics.mAcc, "pACC": metrics.pAcc}
        for i, class_name in enumerate(vocabulary.names):
            mine[f"IoU-{class_name}"] = metrics.per_class_iou[i]
            mine[f"ACC-{class_name}"] = metrics.per_class_acc[i]
        for set_name, values in metrics.sets.items():
            mine.update({f"mIoU-{set_name}": values.mIoU, f"pAcc-{set_name}": values.pAcc, f"mIoU-un{set_name}": values.mIoU_un,
                         f"pAcc-un{set_name}": values.pAcc_un, f"hIoU-{set_name}": values.hIoU})
        reference = dict(zip(side[f"{tag}_metric_names"], gold[f"{tag}_metrics"].tolist()))
        assert set(reference) == set(mine)
        for name, value in reference.items():
            if np.isnan(value):
                assert mine[name] is None, f"{tag} {name}: {mine[name]}, reference NaN"
            else:
                assert mine[name] == pytest.approx(value, rel=1e-9, abs=1e-9), f"{tag} {name}: {mine[name]}, reference {value}"


def check_clip_adapter(case: dict, network) -> None:
    """`MaskFormerClipAdapter` alone, with the crop settings its sidecar records."""
    from zsseg.classification.regions import CropConfig, RegionClassifier, mask_boxes

    gold, side = _tensors(case), _sidecar(case)
    flat = {key: side[key] for key in ("mask_thr", "mask_fill", "mask_expand_ratio", "mask_matting", "region_resized", "templates")
            if key in side}
    check_manifest_against(case, flat)
    crop = CropConfig(threshold=side["mask_thr"], fill=mask_fill(side.get("mask_fill", "mean")),
                      expand_ratio=side.get("mask_expand_ratio", 1.0), matting=side.get("mask_matting", False),
                      resize=side.get("region_resized", True))
    classifier = RegionClassifier(network.clip, prompt=tuple(side["templates"]), crop=crop, text_cache=False)
    text = classifier.embed_vocabulary(side["class_names"])
    close("text_features", text.features.cpu(), gold["text_features"][:-1], atol=TEXT_ATOL)
    crops, keep = classifier.crops(gold["image"].float(), gold["masks"])
    assert torch.equal(keep.to(torch.uint8), gold["valid"])
    boxes = mask_boxes(gold["masks"][keep] > side["mask_thr"])
    assert torch.equal(boxes.float(), gold["boxes_xyxy"].float()), "mask boxes"
    if "region_crops" in gold:
        close("region_crops", batch_of(crops), gold["region_crops"], atol=CROP_ATOL)
    for i, crop_i in enumerate(crops):  # crops of their own sizes, where the case stores them one by one
        for key in (f"region_crops_{i}", f"region_crop_{i}"):
            if key in gold:
                close(key, crop_i.reshape(gold[key].shape), gold[key], atol=CROP_ATOL)
    features = classifier.encode_crops(crops)
    _, logits = classifier.scores(features, text)
    close("region logits", logits, gold["region_logits"][:, :-1], atol=LOGIT_ATOL)
    void = 100 * features @ F.normalize(network.model.void_embedding.detach(), dim=0)
    close("region no-object logit", void, gold["region_logits"][:, -1], atol=LOGIT_ATOL)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reference_case(case, reference_networks, monkeypatch):
    kind = case["kind"]
    if kind == "missing":
        _manifest()
    manifest_settings(case)  # an unknown key fails every kind of case
    if kind == "inference":
        check_inference(case, reference_networks(case), monkeypatch)
    elif kind == "text_features":
        check_text_features(case, reference_networks(case))
    elif kind == "criterion":
        check_criterion(case)
        check_matching(case)
    elif kind == "evaluator":
        check_evaluator(case)
    elif kind == "clip_adapter":
        check_clip_adapter(case, reference_networks(case))
    else:
        pytest.fail(f"{case['name']}: unknown case kind '{kind}'")


def test_manifest_settings_in_both_forms_and_unknown_keys_refused():
    """A case states reference settings at its top level or in "overrides", by any spelling of
    the reference's name; anything else fails, naming the key."""
    case = {"name": "x", "kind": "inference", "clip_ensemble_weight": 0.0, "overrides": {"MODEL.CLIP_ADAPTER.MASK_THR": 0.4}}
    assert manifest_settings(case) == {"clip_ensemble_weight": 0.0, "mask_thr": 0.4}
    for bad in ({"name": "x", "kind": "inference", "ensemble_wieght": 0.3}, {"name": "x", "kind": "inference", "overrides": {"MASK_THRESH": 1}}):
        with pytest.raises(pytest.fail.Exception, match="wieght|MASK_THRESH"):
            manifest_settings(bad)
    with pytest.raises(AssertionError, match="manifest mask_thr 0.4, the reference ran 0.5"):
        check_manifest_against({"name": "x", "mask_thr": 0.4}, {"mask_thr": 0.5})


def test_reference_settings_translate_or_fail(reference_networks):
    """Every setting of a reference config has a zsseg translation, and the CLIP-only and
    network-only switches take the reference's branches."""
    case = next(c for c in CASES if c["kind"] == "inference")
    network = reference_networks(case)
    flat = flat_config(_sidecar(case)["cfg"])
    assert reference_options({**flat, "clip_ensemble_weight": -1.0}, network)["classifier"] == "clip"
    assert reference_options({**flat, "clip_ensemble_weight": 0.0}, network)["ensemble_weight"] == 0.0
    assert reference_options({**flat, "clip_ensemble": False}, network)["classifier"] == "network"
    crop = reference_options({**flat, "mask_fill": "zero", "mask_expand_ratio": 1.5, "mask_matting": True, "region_resized": False},
                             network)["crop"]
    assert (crop.fill, crop.expand_ratio, crop.matting, crop.resize) == ("zero", 1.5, True, False)
    with pytest.raises(pytest.fail.Exception, match="dense_crf"):
        reference_options({**flat, "dense_crf": True}, network)
