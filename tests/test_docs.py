"""The README and docs say what works: their Python snippets run as written (with a small CLIP
in place of the hub id), and every `zsseg ...` command they show is accepted by the parser."""

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import DATA
from zsseg.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(language):
    for path in DOCS:
        for match in re.finditer(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            yield path.relative_to(ROOT), match.group(1)


def _commands():
    """Each `zsseg ...` command of the bash blocks (continuation lines joined, `&&` split)."""
    for path, block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and "zsseg" in words and words[0] in ("zsseg", "torchrun"):
                    yield pytest.param(words[words.index("zsseg") + 1 :], id=f"{path}: {' '.join(words)[:80]}")


@pytest.mark.parametrize("args", list(_commands()))
def test_documented_commands_parse(args):
    _parser().parse_args(args)  # a stale flag or value exits with status 2


def test_there_are_snippets_to_check():
    assert len(list(_commands())) >= 10 and list(_blocks("python"))


@pytest.mark.parametrize("path, code", list(_blocks("python")), ids=lambda x: str(x)[:40])
def test_python_snippets_run(path, code, clip, clip_dir, tmp_path, monkeypatch):
    from zsseg.datasets import load_dataset
    from zsseg.maskformer.config import named_config
    from zsseg.maskformer.training import train_proposals
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    shutil.copy(DATA / "coco" / "val2017" / "000000010363.jpg", tmp_path / "photo.jpg")  # a cat on a car
    if "runs/coco-zs" in code:  # what `zsseg train proposals ... --output-dir runs/coco-zs` writes, trained briefly
        dataset = load_dataset("coco-stuff", DATA, "train")
        dataset.samples = dataset.samples[:2]
        tiny = named_config("tiny")
        config = replace(tiny, train=replace(tiny.train, max_iters=2, batch_size=1, crop_size=64))
        train_proposals(dataset, config, clip, Path("runs/coco-zs"), "zero-shot", progress=False)
    code = code.replace('"openai/clip-vit-base-patch16"', repr(str(clip_dir)))
    exec(compile(code, f"{path} snippet", "exec"), {"__name__": "snippet"})
    assert os.listdir(tmp_path)
