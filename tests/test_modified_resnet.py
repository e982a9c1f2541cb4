"""zsseg's CLIP ResNet image tower (zsseg.models.modified_resnet): architecture read from OpenAI-layout
shapes, attention pooling and MaskCLIP's dense embeddings against written-out computations,
loading and its one-line errors. OpenAI's own code is not run here; the numbers below that come
from it (key counts, tensor sizes, a tiny model's outputs) were recorded by running its
clip/model.py on the same random weights outside the repository."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from zsseg.errors import ZssegError
from zsseg.models.modified_resnet import (OPENAI_RESNETS, AttentionPool2d, ModifiedResNet, ResNetConfig, modified_resnet_from_state,
                                          resnet_config_from_state)
from zsseg.tiny_clip import random_openai_resnet_state

TINY = ResNetConfig((1, 1, 1, 1), width=8, output_dim=16, image_size=64)  # 256 channels, 4 heads

# Per released model: (tensors in OpenAI's ModifiedResNet state dict, their total size incl. batch
# norm buffers, attention-pool heads), as OpenAI's clip/model.py builds them with build_model's heads.
OPENAI_COUNTS = {
    "RN50": (339, 38_370_199, 32),
    "RN101": (645, 56_365_514, 32),
    "RN50x4": (519, 87_246_925, 40),
    "RN50x16": (771, 167_522_959, 48),
    "RN50x64": (1203, 420_791_175, 64),
}


def meta_state(config: ResNetConfig, prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """Shapes only (meta tensors): a full-size OpenAI-layout state without the memory."""
    with torch.device("meta"):
        model = ModifiedResNet(config)
    return {prefix + k: v for k, v in model.state_dict().items()}


def inputs(size: int = 64, width: int | None = None) -> torch.Tensor:
    """Two different images (iid noise images would pool to nearly the same embedding)."""
    x = torch.randn(2, 3, size, width or size, generator=torch.Generator().manual_seed(1))
    x[1] = 2 * x[1].flip(-1) + torch.linspace(-1, 1, width or size)
    return x


@pytest.fixture(scope="module")
def tiny() -> ModifiedResNet:
    return modified_resnet_from_state(random_openai_resnet_state(TINY))


@pytest.mark.parametrize("name", list(OPENAI_RESNETS))
def test_architecture_is_read_from_openai_shapes(name):
    config = OPENAI_RESNETS[name]
    state = meta_state(config)
    tensors, size, heads = OPENAI_COUNTS[name]
    assert (len(state), sum(t.numel() for t in state.values())) == (tensors, size)
    assert resnet_config_from_state(state) == config
    assert config.heads == heads and config.embed_dim == 32 * config.width
    # A stage's highest block index sets its depth, whatever the key order.
    assert resnet_config_from_state(dict(reversed(list(state.items())))) == config


def test_rn50_tensor_shapes_are_openais():
    state = meta_state(OPENAI_RESNETS["RN50"], prefix="")
    expected = {  # from OpenAI's RN50 state dict under "visual."
        "conv1.weight": (32, 3, 3, 3), "conv3.weight": (64, 32, 3, 3), "bn3.running_var": (64,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.0.downsample.1.num_batches_tracked": (),
        "layer2.0.conv3.weight": (512, 128, 1, 1), "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer3.5.conv2.weight": (256, 256, 3, 3), "layer4.2.bn3.weight": (2048,),
        "attnpool.positional_embedding": (50, 2048), "attnpool.q_proj.bias": (2048,),
        "attnpool.c_proj.weight": (1024, 2048),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert "layer1.1.downsample.0.weight" not in state and "layer3.1.downsample.0.weight" not in state


def test_tiny_outputs_match_openai_recorded(tiny):
    # OpenAI's ModifiedResNet(layers=(1,1,1,1), output_dim=16, heads=4, input_resolution=64, width=8)
    # with these weights and inputs, fp32 CPU (outputs up to 5.7); this module differed from it by at most 2.6e-6.
    openai = torch.tensor([[0.90325, 0.14710, -1.30876, -3.03432, 1.77470, -1.83362],
                           [1.68103, 0.43046, -2.36827, -5.68073, 3.27080, -4.17992]])
    with torch.no_grad():
        out = tiny(inputs())
    assert out.shape == (2, 16) and out.dtype == torch.float32
    assert torch.allclose(out[:, :6], openai, atol=1e-4)


def test_forward_is_deterministic_and_per_image(tiny):
    x = inputs()
    with torch.no_grad():
        both = tiny(x)
        again = tiny(x)
        alone = tiny(x[1:])
    assert torch.equal(both, again)
    assert torch.allclose(both[1:], alone, atol=1e-5)  # eval-mode batch norm: no batch statistics
    assert not torch.allclose(both[0], both[1], atol=1e-2)
    assert all(torch.equal(a, b) for a, b in zip(random_openai_resnet_state(TINY).values(),
                                                   random_openai_resnet_state(TINY).values()))
    other = random_openai_resnet_state(TINY, seed=1)
    assert not torch.equal(other["visual.conv1.weight"], random_openai_resnet_state(TINY)["visual.conv1.weight"])


def written_out_attention_pool(pool: AttentionPool2d, x: torch.Tensor) -> torch.Tensor:
    """CLIP's attention pool computed token by token and head by head."""
    n, c, h, w = x.shape
    d = c // pool.heads
    out = []
    for image in x:
        tokens = [image[:, i, j] for i in range(h) for j in range(w)]
        tokens = [torch.stack(tokens).mean(0)] + tokens
        tokens = [t + pool.positional_embedding[k] for k, t in enumerate(tokens)]
        q = pool.q_proj.weight @ tokens[0] + pool.q_proj.bias
        ks = [pool.k_proj.weight @ t + pool.k_proj.bias for t in tokens]
        vs = [pool.v_proj.weight @ t + pool.v_proj.bias for t in tokens]
        heads = []
        for head in range(pool.heads):
            part = slice(head * d, (head + 1) * d)
            scores = torch.stack([q[part] @ k[part] / math.sqrt(d) for k in ks])
            weights = torch.softmax(scores, dim=0)
            heads.append(sum(wt * v[part] for wt, v in zip(weights, vs)))
        out.append(pool.c_proj.weight @ torch.cat(heads) + pool.c_proj.bias)
    return torch.stack(out)


def test_attention_pool_equals_written_out_computation():
    torch.manual_seed(0)
    pool = AttentionPool2d(grid=3, embed_dim=32, heads=4, output_dim=12)
    x = torch.randn(2, 32, 3, 3)
    with torch.no_grad():
        assert torch.allclose(pool(x), written_out_attention_pool(pool, x), atol=1e-5)
    with pytest.raises(ZssegError, match="cannot be split into 5 heads"):
        AttentionPool2d(grid=3, embed_dim=32, heads=5, output_dim=12)


def test_other_sizes_resize_the_position_embedding_bicubically():
    torch.manual_seed(0)
    pool = AttentionPool2d(grid=2, embed_dim=8, heads=2, output_dim=4)
    assert pool.positions(2, 2) is pool.positional_embedding
    resized = pool.positions(3, 5)
    assert resized.shape == (16, 8) and torch.equal(resized[0], pool.positional_embedding[0])
    grid = pool.positional_embedding[1:].T.reshape(1, 8, 2, 2)
    expected = F.interpolate(grid, size=(3, 5), mode="bicubic", align_corners=False).reshape(8, 15).T
    assert torch.allclose(resized[1:], expected)
    with torch.no_grad():  # a constant embedding stays constant: the mean token's row is not mixed in
        pool.positional_embedding[1:] = torch.arange(8.0)
        assert torch.allclose(pool.positions(4, 3)[1:], torch.arange(8.0).expand(12, 8), atol=1e-5)
    x = torch.randn(1, 8, 3, 5)
    with torch.no_grad():
        assert torch.allclose(pool(x), written_out_attention_pool_resized(pool, x), atol=1e-5)


def written_out_attention_pool_resized(pool: AttentionPool2d, x: torch.Tensor) -> torch.Tensor:
    resized = AttentionPool2d(grid=x.shape[-1], embed_dim=x.shape[1], heads=pool.heads, output_dim=pool.c_proj.out_features)
    resized.load_state_dict({k: v for k, v in pool.state_dict().items() if k != "positional_embedding"}, strict=False)
    resized.positional_embedding = torch.nn.Parameter(pool.positions(*x.shape[-2:]))
    return written_out_attention_pool(resized, x)


def test_non_square_inputs(tiny):
    with torch.no_grad():
        pooled, dense = tiny(inputs(64, 96)), tiny.dense(inputs(64, 96))
    assert pooled.shape == (2, 16) and torch.isfinite(pooled).all()
    assert dense.shape == (2, 16, 2, 3)


def test_dense_is_value_then_output_projection_per_position(tiny):
    x = inputs(96)
    pool = tiny.attnpool
    with torch.no_grad():
        dense, features = tiny.dense(x), tiny.features(x)
        assert features.shape == (2, 256, 3, 3) and dense.shape == (2, 16, 3, 3)
        for n, i, j in ((0, 0, 0), (1, 2, 1), (0, 1, 2)):
            expected = pool.c_proj(pool.v_proj(features[n, :, i, j]))
            assert torch.allclose(dense[n, :, i, j], expected, atol=1e-5)


def test_dense_mean_is_the_pooled_embedding_under_uniform_attention():
    model = modified_resnet_from_state(random_openai_resnet_state(TINY))
    x = inputs()
    with torch.no_grad():
        assert not torch.allclose(model(x), model.dense(x).mean(dim=(2, 3)), atol=1e-3)
        pool = model.attnpool
        for tensor in (pool.q_proj.weight, pool.q_proj.bias, pool.k_proj.weight, pool.k_proj.bias, pool.positional_embedding):
            tensor.zero_()
        assert torch.allclose(model(x), model.dense(x).mean(dim=(2, 3)), atol=1e-5)


def test_loads_under_a_prefix_sharing_memory():
    state = {"clip_adapter.clip_model." + k: v for k, v in random_openai_resnet_state(TINY).items()}
    state["clip_adapter.clip_model.token_embedding.weight"] = torch.zeros(3, 4)  # not the image tower: ignored
    state["other.visual.conv1.weight"] = torch.zeros(1)
    model = modified_resnet_from_state(state, prefix="clip_adapter.clip_model.visual.")
    assert not model.training and model.config == TINY
    weight = state["clip_adapter.clip_model.visual.layer2.0.downsample.0.weight"]
    assert model.get_parameter("layer2.0.downsample.0.weight").data_ptr() == weight.data_ptr()
    assert torch.equal(model.attnpool.positional_embedding, state["clip_adapter.clip_model.visual.attnpool.positional_embedding"])


def test_one_dtype_and_absent_batch_counters():
    state = random_openai_resnet_state(TINY)
    half = {k: v.half() if v.is_floating_point() and "bn" not in k else v for k, v in state.items()
            if not k.endswith("num_batches_tracked")}  # fp16 convolutions, fp32 batch norm
    model = modified_resnet_from_state(half)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.bn1.num_batches_tracked.device.type == "cpu"
    with torch.no_grad():
        assert torch.isfinite(model(inputs())).all()
    assert next(modified_resnet_from_state(state, dtype=torch.bfloat16).parameters()).dtype == torch.bfloat16


def one_line_error(state: dict, prefix: str = "visual.") -> str:
    with pytest.raises(ZssegError) as error:
        modified_resnet_from_state(state, prefix)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_errors_name_the_tensor():
    state = random_openai_resnet_state(TINY)
    missing = {k: v for k, v in state.items() if k != "visual.layer2.0.bn1.running_mean"}
    assert "lacks 'visual.layer2.0.bn1.running_mean'" in one_line_error(missing)
    extra = {**state, "visual.layer2.0.conv4.weight": torch.zeros(1)}
    assert "unexpected tensor 'visual.layer2.0.conv4.weight'" in one_line_error(extra)
    bad = {**state, "visual.layer3.0.conv2.weight": torch.zeros(32, 32, 1, 1)}
    message = one_line_error(bad)
    assert "'visual.layer3.0.conv2.weight' has shape (32, 32, 1, 1)" in message and "(32, 32, 3, 3)" in message
    bad = {**state, "visual.attnpool.v_proj.bias": torch.zeros(255)}
    assert "'visual.attnpool.v_proj.bias' has shape (255,)" in one_line_error(bad)


def test_errors_reading_the_architecture():
    state = random_openai_resnet_state(ResNetConfig((1, 3, 1, 1), 8, 16, 64))
    gap = {k: v for k, v in state.items() if not k.startswith("visual.layer2.1.")}
    assert "lacks 'visual.layer2.1.conv1.weight'" in one_line_error(gap)
    no_stage = {k: v for k, v in state.items() if not k.startswith("visual.layer3.")}
    assert "no block in 'visual.layer3'" in one_line_error(no_stage)
    assert "no tensor under 'vision.'" in one_line_error(state, prefix="vision.")
    odd = {**state, "visual.attnpool.positional_embedding": torch.zeros(6, 256)}
    assert "6 rows, not a square grid" in one_line_error(odd)
    assert "lacks 'visual.attnpool.c_proj.weight'" in one_line_error(
        {k: v for k, v in state.items() if k != "visual.attnpool.c_proj.weight"})
    with pytest.raises(ZssegError, match="odd width 7"):
        resnet_config_from_state({**state, "visual.layer1.0.conv1.weight": torch.zeros(7, 8, 1, 1)})
