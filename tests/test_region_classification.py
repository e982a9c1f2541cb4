"""Eq. 1: masked crops -> CLIP -> softmax(100 * cos) over the vocabulary."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from zsseg import RegionClassifier, Vocabulary, ZssegError, crop_regions
from zsseg.prompts.encoding import IMAGENET_TEMPLATES, VILD_TEMPLATES, PromptEncoder, resolve_templates


def test_template_sets():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert len(VILD_TEMPLATES) == 14
    assert resolve_templates("single") == ("a sculpture of a {}.",), "the paper's single prompt"
    assert resolve_templates("photo") == ("a photo of a {}.",)
    with pytest.raises(ZssegError, match="exactly once"):
        resolve_templates(["no placeholder"])


def test_class_embedding_is_normalised_mean_of_normalised_prompts(clip, clip_dir):
    from transformers import CLIPModel

    encoder = PromptEncoder(clip, "vild")
    got = encoder.encode_names(["potted plant"])[0]
    # Independent path: transformers' own CLIP and get_text_features on each prompt.
    prompts = [t.format("potted plant") for t in VILD_TEMPLATES]
    tokens = clip.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = CLIPModel.from_pretrained(clip_dir).eval().get_text_features(**tokens)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    expected = F.normalize(F.normalize(out, dim=-1).mean(0), dim=0)
    assert torch.allclose(got, expected, atol=1e-5)


def test_text_features_are_cached(clip, monkeypatch):
    encoder = PromptEncoder(clip, "photo", cache=False)  # in memory; the disk cache is tested in test_prompts.py
    calls = []
    original = clip.encode_text
    monkeypatch.setattr(clip, "encode_text", lambda texts, **kw: calls.append(list(texts)) or original(texts, **kw))
    first = encoder.encode_names(["cat", "dog"])
    second = encoder.encode_names(["dog", "cat", "bird"])
    assert calls == [["a photo of a cat.", "a photo of a dog."], ["a photo of a bird."]]
    assert torch.equal(first[0], second[1])


def test_too_long_class_name(clip):
    encoder = PromptEncoder(clip, "imagenet")
    with pytest.raises(ZssegError, match="too long.*CLIP's context is 77"):
        encoder.encode_names(["word " * 80])


def test_crop_by_hand():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    image = torch.arange(3 * 6 * 8, dtype=torch.float32).view(3, 6, 8)
    masks = torch.zeros(3, 6, 8)
    masks[0, 1:3, 2:6] = 0.9  # box rows 1..2, cols 2..5
    masks[0, 2, 2] = 0.5  # not > 0.5: background inside the box
    masks[1] = 0.4  # empty after binarising: dropped
    masks[2] = 1.0
    crops, keep = crop_regions(image, masks, size=4, mean=mean, std=std)
    assert keep.tolist() == [True, False, True]
    # Region 0 is 2x4 -> resized to 4x4; build the expected crop independently.
    m = torch.tensor(mean).view(3, 1, 1) * 255
    s = torch.tensor(std).view(3, 1, 1) * 255
    region = ((image[:, 1:3, 2:6] - m) / s) * torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.float32)
    expected = F.interpolate(region[None], size=(4, 4), mode="bicubic", antialias=False)[0]  # the reference's resize
    assert torch.allclose(crops[0], expected, atol=1e-5)
    # Background filled with the pixel mean is exactly 0 after normalising.
    region_only_bg = crop_regions(torch.full((3, 4, 4), 7.0), torch.tensor([[[1, 0, 0, 0]] + [[0, 0, 0, 0]] * 2 + [[0, 0, 0, 1]]], dtype=torch.float32), 4, mean, std)[0]
    assert torch.allclose(region_only_bg[0, :, 1:3, 1:3], torch.zeros(3, 2, 2), atol=1e-5)


def test_eq1_probabilities_by_hand(clip):
    classifier = RegionClassifier(clip, prompt="single")
    text = classifier.embed_vocabulary(["cat", "dog", "wall"])
    image_features = F.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    probs, logits = classifier.scores(image_features, text)
    t = text.features
    for k in range(4):
        cos = [float(image_features[k] @ t[i]) for i in range(3)]
        e = np.exp(100 * np.array(cos) - 100 * max(cos))
        assert probs[k].numpy() == pytest.approx(e / e.sum(), abs=1e-5)


def test_synonyms_take_the_maximum_logit(clip):
    classifier = RegionClassifier(clip, prompt="single")
    text = classifier.embed_vocabulary(Vocabulary.parse("sofa, couch; wall"))
    feats = classifier.prompts.encode_names(["sofa", "couch", "wall"])
    image = F.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    _, logits = classifier.scores(image, text)
    sims = 100 * image @ feats.T
    assert torch.allclose(logits[:, 0], sims[:, :2].max(dim=1).values, atol=1e-4)
    assert torch.allclose(logits[:, 1], sims[:, 2], atol=1e-4)


@pytest.mark.parametrize("side", [224, 448])
def test_whole_image_mask_agrees_with_transformers_zero_shot(clip, clip_dir, coco_val, side):
    """Our crop + encode + Eq. 1 equals CLIPProcessor + CLIPModel.logits_per_image on a square image."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    photo = Image.open(coco_val[0][0]).convert("RGB")
    size = min(photo.size)
    image = np.array(photo.crop((0, 0, size, size)).resize((side, side), Image.BICUBIC))
    names = ["cat", "dog", "wall", "person", "pizza"]
    ours = RegionClassifier(clip, prompt="photo").classify(image, np.ones((1, side, side), bool), names).probs[0]

    processor = CLIPProcessor.from_pretrained(clip_dir)
    model = CLIPModel.from_pretrained(clip_dir).eval()
    inputs = processor(text=[f"a photo of a {n}." for n in names], images=image, return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = model(**inputs).logits_per_image.softmax(dim=-1)[0]
    # Same model, same prompts: only resampling details (PIL on uint8 vs torch on float) differ.
    tolerance = 1e-4 if side == 224 else 2e-2
    assert torch.allclose(ours, reference, atol=tolerance), (ours, reference)
    assert ours.argmax() == reference.argmax()


def test_classify_masks_from_any_source(clip, coco_val):
    from zsseg.data.images import read_image

    image = read_image(coco_val[0][0])
    masks = np.zeros((3,) + image.shape[:2], bool)
    masks[0, :50, :50] = True
    masks[2, 100:, 100:] = True  # masks[1] is empty
    scores = RegionClassifier(clip).classify(image, masks, "voc-20")
    assert scores.keep.tolist() == [True, False, True]
    assert scores.probs.shape == (2, 20) and torch.allclose(scores.probs.sum(1), torch.ones(2))
    with pytest.raises(ZssegError, match="masks must be"):
        RegionClassifier(clip).classify(image, masks[:, :10], "voc-20")


def _reference_crop(image, mask, box, fill, ratio, mean, std):
    """The reference's `crop_with_mask` (fill blended before normalising) after its
    `expand_box` (float32 box arithmetic, `int()`), restated independently for these tests."""
    x1, y1, x2, y2 = (torch.tensor(float(v)) for v in box)
    cx, cy, w, h = 0.5 * (x1 + x2), 0.5 * (y1 + y2), (x2 - x1) * ratio, (y2 - y1) * ratio
    left, top, right, bottom = (int(v) for v in (cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h))
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, image.shape[2]), min(bottom, image.shape[1])
    fills = torch.tensor(fill, dtype=torch.float32).view(3, 1, 1).expand(3, bottom - top, right - left)
    m = mask[None, top:bottom, left:right]
    region = image[:, top:bottom, left:right] * m + (1 - m) * fills
    return (region - torch.tensor(mean).view(3, 1, 1) * 255) / (torch.tensor(std).view(3, 1, 1) * 255)


@pytest.mark.parametrize("fill", ["mean", "zero"])
@pytest.mark.parametrize("ratio", [1.0, 1.3, 0.8])
@pytest.mark.parametrize("matting", [False, True])
def test_crop_settings_are_the_references(fill, ratio, matting):
    """MASK_FILL, MASK_EXPAND_RATIO and MASK_MATTING crop as the reference's adapter does,
    including a box that the expansion pushes past the image's border."""
    from zsseg.classification.regions import CropConfig, mask_boxes

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 40, 50), generator=generator).float()
    masks = torch.zeros(3, 40, 50)
    masks[0, 5:17, 7:30] = torch.rand(12, 23, generator=generator) * 0.6 + 0.4  # soft, partly below the threshold
    masks[1, 30:40, 41:50] = 0.9  # touches the bottom-right border
    masks[2, 0:3, 0:3] = 1.0
    config = CropConfig(fill=fill, expand_ratio=ratio, matting=matting, resize=False)
    crops, keep = crop_regions(image, masks, 224, mean, std, config=config)
    assert keep.tolist() == [True, True, True]
    fills = [255 * c for c in mean] if fill == "mean" else [0.0, 0.0, 0.0]
    for crop, mask, box in zip(crops, masks, mask_boxes(masks > 0.5).tolist()):
        weight = mask if matting else (mask > 0.5).float()
        expected = _reference_crop(image, weight, box, fills, ratio, mean, std)
        assert crop.shape[1:] == expected.shape
        assert torch.allclose(crop[0], expected, atol=1e-5)
    resized, _ = crop_regions(image, masks, 16, mean, std, config=CropConfig(fill=fill, expand_ratio=ratio, matting=matting))
    assert torch.allclose(resized, torch.cat([F.interpolate(c, size=(16, 16), mode="bicubic") for c in crops]), atol=1e-6)


def test_unresized_crops_are_encoded_one_at_a_time(clip):
    """REGION_RESIZED False: each crop at its own size through the image tower alone (position
    embeddings resized to its grid); one smaller than a patch is one line, as it fails the
    reference's CLIP too."""
    from zsseg.classification.regions import CropConfig

    image = np.zeros((96, 128, 3), np.uint8)
    image[:, :, 0] = np.arange(128, dtype=np.uint8)[None] * 2
    masks = np.zeros((2, 96, 128), bool)
    masks[0, 10:80, 5:70] = True
    masks[1, 40:90, 60:128] = True
    classifier = RegionClassifier(clip, prompt="single", crop=CropConfig(resize=False))
    scores = classifier.classify(image, masks, ["cat", "dog"])
    crops, _ = classifier.crops(torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(masks).float())
    assert [tuple(c.shape[2:]) for c in crops] == [(70, 65), (50, 68)]
    alone = torch.cat([clip.encode_images(c) for c in crops])
    _, logits = classifier.scores(alone, classifier.embed_vocabulary(["cat", "dog"]))
    assert torch.allclose(scores.logits, logits, atol=1e-5)
    each = classifier.classify_each(image, list(masks), ["cat", "dog"])
    assert torch.allclose(each.logits, scores.logits, atol=1e-5)
    tiny = np.zeros((1, 96, 128), bool)
    tiny[0, 3:5, 3:9] = True
    with pytest.raises(ZssegError, match="6x2 crop is too small"):
        classifier.classify(image, tiny, ["cat"])


def test_classify_each_follows_the_crop_settings(clip, coco_val):
    from zsseg.data.images import read_image
    from zsseg.classification.regions import CropConfig

    image = read_image(coco_val[0][0])
    masks = np.zeros((3,) + image.shape[:2], np.float32)
    masks[0, :60, :80] = 0.7
    masks[1, 100:, 100:] = 0.95
    masks[2, 20:40, -30:] = np.linspace(0.2, 1.0, 30, dtype=np.float32)
    classifier = RegionClassifier(clip, prompt="single", batch_size=2, crop=CropConfig(fill="zero", expand_ratio=1.4, matting=True))
    whole = classifier.classify(image, masks, "voc-20")
    each = classifier.classify_each(image, list(masks), "voc-20")
    assert torch.equal(whole.keep, each.keep)
    assert torch.allclose(whole.probs, each.probs, atol=1e-6)
    with pytest.raises(ZssegError, match="unknown mask_fill .gray.; choose from mean, zero"):
        CropConfig(fill="gray")
    with pytest.raises(ZssegError, match="two mask thresholds"):
        RegionClassifier(clip, mask_threshold=0.3, crop=CropConfig(threshold=0.5))


def test_identical_masks_are_encoded_once_with_the_same_features(clip, coco_val):
    """Masks whose binarised foreground is the same give the same crop: each distinct crop is
    encoded once, and every mask gets the features (and probabilities) it would have had with
    each crop encoded (up to the float rounding of a batched matmul, which depends on the batch's
    size on some CPUs); with matting the soft masks are what must be the same."""
    from zsseg.classification.regions import CropConfig, distinct_masks
    from zsseg.data.images import image_tensor, read_image

    image = read_image(coco_val[0][0])
    h, w = image.shape[:2]
    base = torch.zeros(3, h, w)
    base[0, : h // 2], base[1, :, : w // 3], base[2, h // 4 :, w // 2 :] = 0.9, 0.8, 0.7
    twin = base[0].clone()
    twin[0, 0] = 0.6  # a different soft mask, the same binarised one
    masks = torch.stack([base[0], base[1], twin, base[2], base[1], torch.zeros(h, w), base[0]])
    firsts, inverse = distinct_masks(masks[[0, 1, 2, 3, 4, 6]] > 0.5)
    assert firsts == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1, 0]
    classifier = RegionClassifier(clip, "photo", text_cache=False)
    calls = []
    encode = classifier.encode_crops
    classifier.encode_crops = lambda crops: calls.append(len(crops)) or encode(crops)
    scores = classifier.classify(image, masks, ["cat", "dog", "grass"])
    assert calls == [3] and scores.keep.tolist() == [True] * 5 + [False, True]
    crops, keep = classifier.crops(image_tensor(image), masks)
    every = classifier.scores(encode(crops), classifier.embed_vocabulary(["cat", "dog", "grass"]))[0]
    assert len(crops) == 6 and torch.equal(keep, scores.keep)
    assert torch.allclose(scores.probs, every, rtol=0, atol=1e-6) and torch.equal(scores.probs[[0, 2, 5]], scores.probs[[0, 0, 0]])
    matting = RegionClassifier(clip, "photo", text_cache=False, crop=CropConfig(matting=True))
    assert len(matting.distinct_crops(image_tensor(image), masks).crops) == 4  # the twin's soft mask differs
