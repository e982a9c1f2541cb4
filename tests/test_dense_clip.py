"""Dense CLIP: sliding windows, exact overlap averaging, the plain and SCLIP towers against
independent references, mask pooling, the fast mode and dense logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA
from torch.nn import functional as F

from zsseg import PromptEncoder, Vocabulary, ZssegError
from zsseg.classification import dense as dense_clip
from zsseg.classification.dense import (
    FEATURE_STRIDE,
    DenseClip,
    DenseFeatures,
    dense_logits,
    pool_masks,
    sliding_windows,
    window_stride,
)
from zsseg.data.images import read_image, resize_image


def normalise(image: np.ndarray, clip) -> torch.Tensor:
    """`[3, H, W]` CLIP input from an HWC uint8 image, written out independently of the module."""
    pixels = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1) / 255
    return (pixels - torch.tensor(clip.image_mean).view(3, 1, 1)) / torch.tensor(clip.image_std).view(3, 1, 1)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def tower_patches(clip, pixels: torch.Tensor) -> torch.Tensor:
    """`[B, D, g, g]` from transformers' own forward of the vision tower."""
    with torch.no_grad():
        tokens = clip.model.vision_model(pixel_values=pixels).last_hidden_state[:, 1:]
        patches = clip.model.visual_projection(clip.model.vision_model.post_layernorm(tokens))
    side = int(round(patches.shape[1] ** 0.5))
    return patches.view(len(pixels), side, side, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("height, width, window, stride", [
    (224, 224, 224, 76), (224, 500, 224, 76), (301, 224, 224, 76), (480, 640, 224, 76),
    (225, 449, 224, 224), (1000, 230, 224, 100), (50, 70, 32, 4),
])
def test_sliding_windows_cover_every_pixel_and_end_at_the_border(height, width, window, stride):
    corners = sliding_windows(height, width, window, stride)
    count = np.zeros((height, width), dtype=int)
    for y, x in corners:
        count[y : y + window, x : x + window] += 1
    assert count.min() >= 1 and count[-1, -1] >= 1
    ys, xs = sorted({y for y, _ in corners}), sorted({x for _, x in corners})
    assert ys[0] == 0 and xs[0] == 0
    assert ys[-1] == height - window and xs[-1] == width - window
    assert all(0 < b - a <= stride for a, b in zip(ys, ys[1:]))
    assert all(0 < b - a <= stride for a, b in zip(xs, xs[1:]))
    assert len(corners) == len(ys) * len(xs)


def test_window_stride():
    assert window_stride(224, 2 / 3) == 76  # 74.67 to the nearest multiple of 4
    assert window_stride(224, 0) == 224
    assert window_stride(224, 0.999) == FEATURE_STRIDE


@pytest.mark.parametrize("height, width", [(300, 400), (100, 160), (224, 452)])
def test_overlapping_windows_are_averaged_exactly(clip, monkeypatch, height, width):
    dense = DenseClip(clip, batch_size=3)
    calls = []

    def fake_window_features(pixels):  # window number n (from 1) gives the constant n
        first = sum(calls) + 1
        calls.append(len(pixels))
        values = torch.arange(first, first + len(pixels), dtype=torch.float32)
        return values.view(-1, 1, 1, 1).expand(-1, clip.embed_dim, 7, 7).clone()

    monkeypatch.setattr(dense, "window_features", fake_window_features)
    out = dense.features(random_image(height, width))

    padded_h, padded_w = max(height, 224), max(width, 224)
    corners = sliding_windows(padded_h, padded_w, 224, dense.stride)
    assert out.windows == len(corners) == sum(calls) and max(calls) <= 3
    s = FEATURE_STRIDE
    expected = np.zeros((height // s, width // s))
    for i in range(height // s):
        for j in range(width // s):
            covering = [n + 1 for n, (y, x) in enumerate(corners)
                        if y <= i * s < y + 224 and x <= j * s < x + 224]
            expected[i, j] = np.mean(covering)
    assert out.stride == s and out.features.shape == (clip.embed_dim, height // s, width // s)
    assert torch.allclose(out.features, torch.tensor(expected, dtype=torch.float32).expand_as(out.features), atol=1e-5)


def test_a_window_sized_image_takes_one_forward(clip):
    dense = DenseClip(clip)
    image = random_image(224, 224, seed=1)
    before = dense.forwards
    out = dense.features(image)
    assert dense.forwards == before + 1 and out.windows == 1
    grid = dense.window_features(normalise(image, clip)[None])
    expected = F.interpolate(grid, size=(56, 56), mode="bilinear", align_corners=False)[0]
    assert out.features.dtype == torch.float32
    assert torch.allclose(out.features, expected, atol=1e-5)


def test_plain_mode_equals_the_towers_own_output(clip):
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    ours = DenseClip(clip).window_features(pixels)
    assert ours.shape == (2, clip.embed_dim, 7, 7)
    assert torch.allclose(ours, tower_patches(clip, pixels), atol=1e-5)


def sclip_reference(clip, pixels: torch.Tensor) -> torch.Tensor:
    """SCLIP's last block with plain tensor ops, one head at a time."""
    vision = clip.model.vision_model
    with torch.no_grad():
        x = vision.pre_layrnorm(vision.embeddings(pixels))
        for layer in vision.encoder.layers[:-1]:  # to the input of the last layer
            x = layer(x)
        layer = vision.encoder.layers[-1]
        attn = layer.self_attn
        normed = F.layer_norm(x, (x.shape[-1],), layer.layer_norm1.weight, layer.layer_norm1.bias, layer.layer_norm1.eps)
        q = normed @ attn.q_proj.weight.T + attn.q_proj.bias
        k = normed @ attn.k_proj.weight.T + attn.k_proj.bias
        v = normed @ attn.v_proj.weight.T + attn.v_proj.bias
        heads, width = attn.num_heads, x.shape[-1] // attn.num_heads
        outputs = []
        for h in range(heads):
            cut = slice(h * width, (h + 1) * width)
            qh, kh, vh = q[..., cut], k[..., cut], v[..., cut]
            weights = torch.softmax(torch.einsum("bnc,bmc->bnm", qh, qh) / width**0.5, dim=-1)
            weights = weights + torch.softmax(torch.einsum("bnc,bmc->bnm", kh, kh) / width**0.5, dim=-1)
            outputs.append(torch.einsum("bnm,bmc->bnc", weights, vh))
        x = x + torch.cat(outputs, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias
        patches = clip.model.visual_projection(vision.post_layernorm(x[:, 1:]))
    return patches.view(len(pixels), 7, 7, -1).permute(0, 3, 1, 2)


def test_sclip_mode_equals_a_hand_written_correlative_attention(clip):
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    sclip = DenseClip(clip, mode="sclip").window_features(pixels)
    plain = DenseClip(clip, mode="plain").window_features(pixels)
    assert sclip.shape == plain.shape
    assert (sclip - plain).abs().max() > 1e-2
    assert torch.allclose(sclip, sclip_reference(clip, pixels), atol=1e-5)


def test_sclip_dense_features_on_a_real_image(clip):
    image = read_image(sorted((DATA / "coco" / "val2017").glob("*.jpg"))[0])
    dense = DenseClip(clip, mode="sclip", batch_size=4)
    size = dense.processing_size(*image.shape[:2], max_size=320)
    assert max(size) <= 320 and all(v % FEATURE_STRIDE == 0 for v in size)
    out = dense.features(resize_image(image, size))
    assert out.features.shape == (clip.embed_dim, size[0] // 4, size[1] // 4)
    assert torch.isfinite(out.features).all()
    assert out.windows == len(sliding_windows(max(size[0], 224), max(size[1], 224), 224, 76))


def test_other_window_sizes_interpolate_the_position_embeddings(clip):
    dense = DenseClip(clip, window=160, overlap=0.5)
    out = dense.features(random_image(200, 320, seed=4))
    assert dense.stride == 80 and out.windows == len(sliding_windows(200, 320, 160, 80))
    assert out.features.shape == (clip.embed_dim, 50, 80) and torch.isfinite(out.features).all()


def test_processing_size():
    dense = DenseClip.__new__(DenseClip)
    assert dense.processing_size(480, 640, None) == (480, 640)
    assert dense.processing_size(427, 640, None) == (428, 640)
    assert dense.processing_size(427, 640, 320) == (212, 320)
    assert dense.processing_size(1000, 510, 510) == (508, 260)  # never above max_size
    assert dense.processing_size(1, 2, None) == (4, 4)


def test_pool_masks():
    features = torch.randn(8, 5, 7, generator=torch.Generator().manual_seed(5))
    dense = DenseFeatures(features=features, stride=4, windows=1)
    masks = torch.zeros(4, 20, 28)
    masks[0] = 1  # the whole image
    masks[2, 8:12, 12:16] = 0.9  # exactly cell (2, 3) ...
    masks[2, 16:20, 24:28] = 0.4  # ... (cell (4, 6) is below the threshold)
    masks[1] = 0.5  # not above the threshold: empty
    masks[3, 0:4, 0:2] = 1  # half of cell (0, 0) ...
    masks[3, 0:4, 4:8] = 1  # ... and all of cell (0, 1)
    pooled, keep = pool_masks(dense, masks)
    assert keep.tolist() == [True, False, True, True]
    assert pooled.shape == (3, 8)
    assert torch.allclose(pooled[0], features.mean(dim=(1, 2)), atol=1e-6)
    assert torch.allclose(pooled[1], features[:, 2, 3], atol=1e-6)
    assert torch.allclose(pooled[2], (0.5 * features[:, 0, 0] + features[:, 0, 1]) / 1.5, atol=1e-6)
    bool_pooled, bool_keep = pool_masks(dense, masks > 0.5)
    assert torch.equal(bool_keep, keep) and torch.allclose(bool_pooled, pooled)
    assert pool_masks(dense, masks[:0])[0].shape == (0, 8)
    with pytest.raises(ZssegError, match="processing size"):
        pool_masks(dense, torch.ones(1, 21, 28))


@pytest.mark.parametrize("source", ["000000010707.jpg", "000000011615.jpg", (60, 1000)])  # 640x480, 480x640 (tall)
def test_fast_mode_takes_at_most_two_windows(clip, source):
    image = random_image(*source) if isinstance(source, tuple) else read_image(DATA / "coco" / "val2017" / source)
    assert image.shape[:2] in ((480, 640), (640, 480), (60, 1000))
    dense = DenseClip(clip, overlap=0)
    size = dense.fast_size(*image.shape[:2])
    assert min(size) <= 224 and max(size) <= 448 and all(v % FEATURE_STRIDE == 0 for v in size)
    before = dense.forwards
    out = dense.features(resize_image(image, size))
    assert dense.forwards - before == out.windows <= 2
    assert out.features.shape[1:] == (size[0] // 4, size[1] // 4)


def test_bad_inputs(clip):
    with pytest.raises(ZssegError, match="unknown dense CLIP mode 'maskclip'; choose one of plain, sclip"):
        DenseClip(clip, mode="maskclip")
    for overlap in (1.0, -0.1):
        with pytest.raises(ZssegError, match=r"overlap must be in \[0, 1\)"):
            DenseClip(clip, overlap=overlap)
    with pytest.raises(ZssegError, match="multiple of 4"):
        DenseClip(clip, window=222)
    dense = DenseClip(clip)
    with pytest.raises(ZssegError, match="multiples of 4.*got 226x224"):
        dense.features(random_image(226, 224))
    with pytest.raises(ZssegError, match="HWC uint8 RGB"):
        dense.features(random_image(224, 224).astype(np.float32))
    with pytest.raises(ZssegError, match="at least the window"):
        sliding_windows(100, 300, 224, 76)


def test_dense_logits_equal_a_direct_computation(clip, monkeypatch):
    text = PromptEncoder(clip, "single").encode_vocabulary(Vocabulary.parse("cat; dog, puppy; wall"))
    features = torch.randn(clip.embed_dim, 6, 9, generator=torch.Generator().manual_seed(6))
    dense = DenseFeatures(features=features, stride=4, windows=1)
    monkeypatch.setattr(dense_clip, "_CHUNK_ELEMENTS", 20)  # several chunks of cells
    logits = dense_logits(dense, text)
    unit = features / features.norm(dim=0, keepdim=True)
    sims = 100 * torch.einsum("sd,dhw->shw", text.features, unit)
    expected = torch.stack([sims[0], torch.maximum(sims[1], sims[2]), sims[3]])
    assert logits.shape == (3, 6, 9)
    assert torch.allclose(logits, expected, atol=1e-4)
