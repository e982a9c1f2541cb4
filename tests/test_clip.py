import json
import re

import pytest
import torch

from zsseg import ZssegError, load_clip
from zsseg.models.loading import CLIP_MEAN


def test_loads_a_folder_through_the_public_path(clip, clip_dir):
    assert clip.source == str(clip_dir)
    assert clip.image_size == 224 and clip.context_length == 77
    assert clip.image_mean == pytest.approx(CLIP_MEAN)
    # The real BPE tokenizer: "a photo of a cat." has CLIP's known ids.
    assert clip.tokenizer("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    features = clip.encode_text(["a photo of a cat.", "a photo of a dog."])
    assert features.shape == (2, 32) and torch.allclose(features.norm(dim=-1), torch.ones(2))


def test_bf16(clip_dir):
    model = load_clip(str(clip_dir), dtype="bf16")
    assert model.dtype == torch.bfloat16
    images = model.encode_images(torch.zeros(2, 3, 224, 224))
    assert images.dtype == torch.float32 and images.shape == (2, 32)


def test_missing_folder(tmp_path):
    with pytest.raises(ZssegError, match="CLIP folder not found"):
        load_clip(str(tmp_path / "nope" / "clip"))


@pytest.mark.parametrize("name", ["nope/clip.safetensors", "models/ViT-B-16.pt", "clip.bin", "RN50.PTH"])
def test_missing_weights_file_is_named_as_a_file(tmp_path, monkeypatch, name):
    """A weights file that is not there is reported as a missing file, never tried on the hub as
    a repository ("models/ViT-B-16.pt" has the shape of "owner/name")."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZssegError, match=f"^CLIP file not found: {re.escape(name)}$"):
        load_clip(name)


def test_folder_without_config(tmp_path):
    with pytest.raises(ZssegError, match="no config.json"):
        load_clip(str(tmp_path))


def test_folder_with_another_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ZssegError, match="'bert' model, not CLIP"):
        load_clip(str(tmp_path))


def test_folder_without_weights(tmp_path, clip_dir):
    (tmp_path / "config.json").write_text((clip_dir / "config.json").read_text())
    with pytest.raises(ZssegError, match="no weights"):
        load_clip(str(tmp_path))


def test_a_file_is_not_a_checkpoint(clip_dir):
    with pytest.raises(ZssegError, match="is a file of another kind; give a folder"):
        load_clip(str(clip_dir / "config.json"))


def test_unreachable_hub_id_explains_how_to_work_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ZssegError) as error:
        load_clip("openai/clip-vit-base-patch16")
    message = str(error.value)
    assert "\n" not in message
    assert "not in the local Hugging Face cache" in message and "--local-dir" in message


def test_bad_dtype_and_device(clip_dir):
    with pytest.raises(ZssegError, match="unknown dtype"):
        load_clip(str(clip_dir), dtype="int4")
    with pytest.raises(ZssegError, match="is not a device"):
        load_clip(str(clip_dir), device="nonsense")
