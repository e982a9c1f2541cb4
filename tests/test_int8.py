"""`--dtype int8`'s linear layers (`zsseg.models.int8`): torch's dynamic quantisation, built once,
bit for bit, on every CLIP family's image tower, fast mode included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import TOKENIZER
from zsseg import Segmenter, load_clip
from zsseg.models.int8 import Int8Linear, quantise_linears
from zsseg.tiny_clip import save_tiny_open_clip


def torch_dynamic(linear: torch.nn.Linear) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)


@pytest.mark.parametrize("shape, bias", [((96, 64), True), ((64, 96), True), ((5, 7), False), ((33, 1), True)])
def test_int8_linear_is_torch_s_dynamic_quantisation_bit_for_bit(shape, bias):
    generator = torch.Generator().manual_seed(sum(shape))
    linear = torch.nn.Linear(shape[1], shape[0], bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(shape, generator=generator) * 0.3)
    reference, ours = torch_dynamic(linear), Int8Linear(linear)
    for x in (torch.randn(3, shape[1], generator=generator), 4 * torch.randn(2, 11, shape[1], generator=generator)):
        assert torch.equal(ours(x), reference(x))
    state = ours.state_dict()
    weight = reference[0].weight()
    assert torch.equal(state["weight"], weight.int_repr()) and state["weight"].dtype == torch.int8
    assert float(state["scale"]) == weight.q_scale() and ("bias" in state) == bias
    assert "int8" in repr(ours)


def test_quantise_linears_replaces_each_float_linear_and_nothing_else():
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Sequential(torch.nn.Linear(16, 4)),
                                 torch.nn.Conv2d(3, 3, 1))
    x = torch.randn(5, 8)
    expected = module[2](module[1](torch_dynamic(module[0])(x)))
    assert quantise_linears(module) == 2 and quantise_linears(module) == 0
    assert isinstance(module[0], Int8Linear) and isinstance(module[2][0], Int8Linear) and isinstance(module[3], torch.nn.Conv2d)
    assert not torch.equal(module[2][0](module[1](module[0](x))), expected)  # module[2] was quantised too
    assert list(module.parameters()) == [module[3].weight, module[3].bias]  # the float weights are gone


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return save_tiny_open_clip(tmp_path_factory.mktemp("int8") / "resnet", "resnet")


def test_int8_resnet_clip_gives_dense_features_and_runs_the_fast_mode(resnet):
    """A ResNet CLIP's dense features (MaskCLIP's value and output projections per position) use
    its projections as 1x1 convolutions in float; int8 applies the quantised layers per position."""
    fp32 = load_clip(str(resnet), tokenizer=str(TOKENIZER))
    int8 = load_clip(str(resnet), tokenizer=str(TOKENIZER), dtype="int8")
    assert int8.precision == "int8" and isinstance(int8.model.visual.attnpool.v_proj, Int8Linear)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    a, b = fp32.dense_features(pixels), int8.dense_features(pixels)
    assert a.shape == b.shape and not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a, b, dim=1).min() > 0.99
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    result = Segmenter(clip=int8, method="fast", text_cache=False, max_proposals=10).segment(image, "cat; grass; sky")
    assert result.label_map.shape == (64, 80)


def test_int8_weight_fingerprint_names_the_int8_weights(resnet):
    """Self-training's run signature fingerprints every CLIP weight: for int8 the quantised ones
    (torch's quantised modules held tuples there, which could not be fingerprinted)."""
    fp32 = load_clip(str(resnet), tokenizer=str(TOKENIZER))
    int8 = load_clip(str(resnet), tokenizer=str(TOKENIZER), dtype="int8")
    again = load_clip(str(resnet), tokenizer=str(TOKENIZER), dtype="int8")
    assert int8.weights_fingerprint() == again.weights_fingerprint() != fp32.weights_fingerprint()
    assert int8.text_fingerprint() == fp32.text_fingerprint()
