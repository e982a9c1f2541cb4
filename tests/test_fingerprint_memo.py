"""The text fingerprint's memo (`zsseg.models.fingerprints`): a process whose CLIP files are
unchanged reads the fingerprint from the text cache instead of hashing the text tower, and
hashes in full whenever the memo cannot vouch for the weights."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import SHARED, TOKENIZER
from zsseg import PromptEncoder, load_clip
from zsseg.models import fingerprints
from zsseg.prompts.text_cache import TextFeatureCache
from zsseg.tiny_clip import save_tiny_open_clip


@pytest.fixture
def hashes(monkeypatch):
    """Counts full hashes of weights."""
    calls = []
    real = fingerprints.fingerprint
    monkeypatch.setattr(fingerprints, "fingerprint", lambda tensors: calls.append(len(tensors)) or real(tensors))
    return calls


def test_an_unchanged_clip_folder_reads_its_fingerprint_from_the_memo(clip_dir, tmp_path, hashes):
    folder = shutil.copytree(clip_dir, tmp_path / "clip")
    cache = TextFeatureCache(tmp_path / "cache")
    first = load_clip(str(folder))
    features = PromptEncoder(first, "single", cache=cache).encode_names(["cat", "dog"])
    assert len(hashes) == 1
    expected = fingerprints.fingerprint(first.text_state())
    hashes.clear()
    again = load_clip(str(folder))
    assert again.text_fingerprint(cache) == expected and hashes == []  # read from the memo
    assert torch.equal(PromptEncoder(again, "single", cache=cache).encode_names(["cat", "dog"]), features)
    assert load_clip(str(folder)).text_fingerprint() == expected and len(hashes) == 1  # no memo given: hashed


def test_a_rewritten_weights_file_is_hashed_again_even_with_its_old_size_and_time(clip_dir, tmp_path, hashes):
    """Rewriting the file changes its status-change time, which no command sets back: the memo
    is not used, though size and modification time are the old ones."""
    folder = shutil.copytree(clip_dir, tmp_path / "clip")
    cache = TextFeatureCache(tmp_path / "cache")
    before = load_clip(str(folder)).text_fingerprint(cache)
    weights = folder / "model.safetensors"
    stat = weights.stat()
    tensors = load_file(weights)
    tensors["text_model.final_layer_norm.weight"] = tensors["text_model.final_layer_norm.weight"] * 1.5
    save_file(tensors, weights, metadata={"format": "pt"})
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    hashes.clear()
    after = load_clip(str(folder)).text_fingerprint(cache)
    assert after != before and len(hashes) == 1


def test_weights_modified_after_loading_and_a_memo_that_disagrees_are_hashed(clip_dir, tmp_path, hashes):
    folder = shutil.copytree(clip_dir, tmp_path / "clip")
    cache = TextFeatureCache(tmp_path / "cache")
    expected = load_clip(str(folder)).text_fingerprint(cache)
    changed = load_clip(str(folder))
    with torch.no_grad():
        changed.model.text_model.final_layer_norm.bias.add_(0.25)  # in place: torch's version counter moves
    hashes.clear()
    assert changed.text_fingerprint(cache) != expected and len(hashes) == 1
    replaced = load_clip(str(folder))
    layer = replaced.model.text_model.final_layer_norm
    layer.weight = torch.nn.Parameter(layer.weight.detach().clone())  # the same values in a new tensor
    assert replaced.text_fingerprint(cache) == expected and len(hashes) == 2
    # An entry whose sample of the weights differs (another conversion of the same file) is not believed.
    with sqlite3.connect(cache.path) as connection:
        assert connection.execute("UPDATE fingerprints SET fingerprint = 'stale', sample = 'other'").rowcount == 1
    connection.close()
    assert load_clip(str(folder)).text_fingerprint(cache) == expected and len(hashes) == 3
    assert load_clip(str(folder)).text_fingerprint(cache) == expected and len(hashes) == 3  # the entry was corrected


def test_open_clip_files_and_an_authors_checkpoint_use_the_memo_too(tmp_path, hashes):
    from zsseg.networks.maskformer.reference import load_reference_checkpoint
    from zsseg.tiny_clip import save_tiny_reference_checkpoint

    cache = TextFeatureCache(tmp_path / "cache")
    open_clip = save_tiny_open_clip(tmp_path / "open-clip", "vit")
    expected = load_clip(str(open_clip), tokenizer=str(TOKENIZER)).text_fingerprint(cache)
    assert load_clip(str(open_clip), tokenizer=str(TOKENIZER)).text_fingerprint(cache) == expected and len(hashes) == 1
    checkpoint = save_tiny_reference_checkpoint(tmp_path / "model_final.pth",
                                                SHARED / "reference-parity" / "keys-coco-stuff-156-single-prompt.txt")
    clips = [load_reference_checkpoint(checkpoint, tokenizer=str(TOKENIZER)).clip for _ in range(2)]
    assert clips[0].text_fingerprint(cache) == clips[1].text_fingerprint(cache) and len(hashes) == 2


def test_without_the_text_cache_nothing_is_written_and_the_record_hashes(clip_dir, tmp_path, monkeypatch, hashes):
    from zsseg import Segmenter

    monkeypatch.setenv("ZSSEG_CACHE_DIR", str(tmp_path / "cache"))
    Segmenter(clip=str(clip_dir), text_cache=True, prompt="single").record()  # the record's fingerprint goes through the memo
    assert (tmp_path / "cache").is_dir() and len(hashes) == 1
    shutil.rmtree(tmp_path / "cache")
    segmenter = Segmenter(clip=str(clip_dir), text_cache=False, prompt="single")
    assert segmenter.record()["models"]["clip"]["text"] and len(hashes) == 2
    segmenter.prepare("cat; dog")
    assert not (tmp_path / "cache").exists()
