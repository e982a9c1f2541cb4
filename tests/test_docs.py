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
    from zsseg.data.datasets import load_dataset
    from zsseg.training.recipes import load_recipe
    from zsseg.training.proposals import train_proposals
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    shutil.copy(DATA / "coco" / "val2017" / "000000010363.jpg", tmp_path / "photo.jpg")  # a cat on a car
    if "runs/coco-zs" in code:  # what `zsseg train proposals ... --output-dir runs/coco-zs` writes, trained briefly
        dataset = load_dataset("coco-stuff", DATA, "train")
        dataset.samples = dataset.samples[:2]
        tiny = load_recipe("proposals", "tiny")
        config = replace(tiny, train=replace(tiny.train, max_iters=2, batch_size=1, crop_size=64))
        train_proposals(dataset, config, clip, Path("runs/coco-zs"), "zero-shot", progress=False)
    code = code.replace('"openai/clip-vit-base-patch16"', repr(str(clip_dir)))
    exec(compile(code, f"{path} snippet", "exec"), {"__name__": "snippet"})
    assert os.listdir(tmp_path)


def _parser_flags() -> dict[tuple[str, ...], set[str]]:
    """Each command's long options, by its words ("segment", "train proposals"), from the parser."""
    import argparse

    found: dict[tuple[str, ...], set[str]] = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        flags = {o for action in parser._actions for o in action.option_strings if o.startswith("--") and o != "--help"}
        found[words] = flags
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*words, name))

    walk(_parser(), ())
    return found


def _synopses(path: Path) -> dict[tuple[str, ...], set[str]]:
    """The flags each `zsseg COMMAND ...` entry of a file's synopsis blocks (the ``` blocks with no
    language that start with `zsseg `) names; "the model flags of segment" stands for those of
    segment's flags the command has too (marked by a "*" so that the test can tell them)."""
    entries: dict[tuple[str, ...], set[str]] = {}
    for block in re.findall(r"```\n(zsseg .*?)```", path.read_text(encoding="utf-8"), re.S):
        current = None
        for line in block.splitlines():
            if line.startswith("zsseg "):
                words = tuple(w for w in line.split()[1:] if re.fullmatch(r"[a-z][a-z-]*", w))
                current = entries.setdefault(words[:2] if words[:1] in (("train",), ("prompts",), ("datasets",)) else words[:1], set())
            if current is not None:
                current |= set(re.findall(r"--[a-z][a-z0-9-]*", line))
                if "the model flags of segment" in line:
                    current.add("*")
    return entries


@pytest.mark.parametrize("path", [ROOT / "README.md", ROOT / "docs" / "evaluation.md"], ids=lambda p: p.name)
def test_synopses_name_every_flag_the_parser_has(path):
    parser = _parser_flags()
    synopses = _synopses(path)
    assert synopses, f"no synopsis in {path.name}"
    problems = []
    for command, named in synopses.items():
        assert command in parser, f"{path.name}: `zsseg {' '.join(command)}` is not a command"
        if "*" in named:
            named = (named - {"*"}) | (parser[command] & parser[("segment",)])
        missing, unknown = parser[command] - named, named - parser[command]
        if missing or unknown:
            problems.append(f"zsseg {' '.join(command)}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    assert not problems, f"{path.name}: " + "; ".join(problems)
