"""One typed configuration (`zsseg.SegmenterConfig`), from the command line down to the stages:
defaults written once, nothing silently dropped, a JSON round trip, the record every output
keeps, and the runs the library owns (`zsseg.evaluate`, `zsseg.segment_folder`, `zsseg.write_result`)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from zsseg import SegmenterConfig, Segmenter, ZssegError, evaluate, load_config, segment_folder, write_result
from zsseg.catalogue import DEFAULT_MASK_THRESHOLD, DEFAULT_MAX_PROPOSALS
from zsseg.cli import main
from zsseg.config import OPTIONS
from zsseg.errors import SettingError
from zsseg.proposals import SelectiveSearch
from zsseg.proposals.sam import SamConfig
from zsseg.proposals.selective_search import SelectiveSearchConfig

ADE = sorted((DATA / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))


def test_defaults_are_the_catalogue_s():
    config = SegmenterConfig()
    assert config.method == "two-stage" and isinstance(config.proposals, SelectiveSearchConfig)
    assert config.proposals.max_proposals == DEFAULT_MAX_PROPOSALS and config.region.crop.threshold == DEFAULT_MASK_THRESHOLD
    assert config.ensemble is None and config.dense is None and config.fcn is None
    assert SegmenterConfig(method="dense-clip").proposals is None and SegmenterConfig(method="dense-clip").dense is not None


@pytest.mark.parametrize("options", [
    {},
    {"method": "fast", "dense_mode": "sclip", "max_proposals": 7},
    {"method": "dense-clip", "overlap": 0.5, "max_size": 512},
    {"method": "fcn", "fcn": "runs/fcn", "ensemble_weight": 0.6, "classifier": "network"},
    {"proposals": "maskformer", "proposal_weights": "runs/zs", "ensemble_weight": 0.3, "seen": ["cat", "dog"], "network_prompt": "single"},
    {"proposals": "contour-hierarchy", "temperature": 50.0, "prompt": "vild", "mask_fill": "zero", "mask_expand_ratio": 1.5,
     "mask_matting": True, "resize_crops": False, "test_size": 320, "dtype": "fp32", "batch_size": 4, "text_cache": False},
])
def test_a_configuration_round_trips_through_json(options):
    config = SegmenterConfig.from_options(**options)
    data = json.loads(json.dumps(config.to_dict()))
    assert SegmenterConfig.from_dict(data) == config
    assert SegmenterConfig.from_dict(data).to_dict() == data


def test_every_generator_setting_can_come_from_a_file():
    """What has no flag (SAM's thresholds, Selective Search's parameters, duplicate_iou, the
    temperature) is set in a configuration file and reaches the stage."""
    config = SegmenterConfig(proposals=SamConfig(model="sam-folder", points_per_side=8, pred_iou_thresh=0.7, duplicate_iou=0.9))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["proposals"]["points_per_side"] == 8 and SegmenterConfig.from_dict(data).proposals == config.proposals
    searched = dataclasses.replace(SelectiveSearchConfig(), scales=(30,), working_size=256, seed=3)
    generator = SegmenterConfig(proposals=searched).proposals.build()
    assert isinstance(generator, SelectiveSearch) and generator.config == searched


def test_a_file_with_an_unknown_or_misplaced_key_is_refused(tmp_path):
    data = SegmenterConfig().to_dict()
    with pytest.raises(SettingError, match="^nonsense is not a part of a segmenter's configuration"):
        SegmenterConfig.from_dict({**data, "nonsense": 1})
    with pytest.raises(ZssegError, match="points_per_side"):
        SegmenterConfig.from_dict({**data, "proposals": {**data["proposals"], "points_per_side": 8}})  # SAM's, not Selective Search's
    path = tmp_path / "bad.json"
    path.write_text('{"images": 3}')
    with pytest.raises(ZssegError, match="holds no configuration"):
        load_config(path)
    path.write_text("{not json")
    with pytest.raises(ZssegError, match="^cannot read the configuration"):
        load_config(path)


@pytest.mark.parametrize("options, setting", [
    ({"proposals": "selective-search", "ensemble_weight": 0.3}, "ensemble_weight"),
    ({"proposals": "selective-search", "classifier": "network"}, "classifier"),
    ({"method": "fast", "overlap": 0.5}, "overlap"),
    ({"method": "dense-clip", "max_proposals": 5}, "max_proposals"),
    ({"method": "dense-clip", "mask_threshold": 0.3}, "mask_threshold"),
    ({"method": "two-stage", "dense_mode": "sclip"}, "dense_mode"),
    ({"method": "fast", "mask_fill": "zero"}, "mask_fill"),
    ({"proposals": "sam", "proposal_weights": "runs/zs"}, "proposal_weights"),
    ({"method": "two-stage", "fcn": "runs/fcn"}, "fcn"),
    ({"overlapp": 0.5}, "overlapp"),
])
def test_a_setting_the_method_does_not_take_is_an_error_naming_it(options, setting):
    with pytest.raises(SettingError) as error:
        SegmenterConfig.from_options(**options)
    assert error.value.setting == setting and setting in str(error.value) and "--" not in str(error.value)


def test_the_segmenter_shortcut_drops_nothing(clip):
    """The issue's examples: from Python, an option that does not apply is an error in the API's
    words, and one given beside a loaded generator reaches it."""
    with pytest.raises(ZssegError) as error:
        Segmenter(clip=clip, proposals="selective-search", ensemble_weight=0.3)
    assert "ensemble_weight" in str(error.value) and "--" not in str(error.value)
    with pytest.raises(ZssegError, match="^overlap is for the methods with sliding windows"):
        Segmenter(clip=clip, method="fast", overlap=0.5)
    segmenter = Segmenter(clip=clip, proposals=SelectiveSearch(), max_proposals=5)
    assert segmenter.proposals.max_proposals == 5 and segmenter.config.proposals.max_proposals == 5


def test_a_config_and_the_shortcut_build_the_same_segmenter(clip, clip_dir):
    config = SegmenterConfig.from_options(clip=str(clip_dir), max_proposals=6, prompt="single", max_size=96)
    by_config, by_options = Segmenter(config), Segmenter(clip=str(clip_dir), max_proposals=6, prompt="single", max_size=96)
    assert by_config.config == by_options.config == config
    image = ADE[0]
    assert np.array_equal(by_config.segment(image, "wall; sky; tree").label_map, by_options.segment(image, "wall; sky; tree").label_map)
    assert by_config.record() == by_options.record()


def test_the_command_line_round_trip(clip_dir, tmp_path, capsys):
    """Judged: segment A, then segment again from A's JSON alone (no vocabulary flag): the same
    label map, byte for byte; a flag beside --config overrides the file."""
    image = ADE[1]
    assert main(["segment", str(image), "--classes", "wall; floor; sky; tree; person", "--clip", str(clip_dir), "--max-proposals", "10",
                 "--max-size", "128", "--out", str(tmp_path / "A")]) == 0
    record = tmp_path / "A" / f"{image.stem}.json"
    written = json.loads(record.read_text())["config"]
    assert written["proposals"]["max_proposals"] == 10 and written["vocabulary"][0] == ["wall"]
    assert written["models"]["clip"]["source"] == str(clip_dir) and len(written["models"]["clip"]["text"]) == 16
    assert main(["segment", str(image), "--config", str(record), "--out", str(tmp_path / "B")]) == 0
    png = f"{image.stem}.png"
    assert (tmp_path / "A" / png).read_bytes() == (tmp_path / "B" / png).read_bytes()
    assert main(["segment", str(image), "--config", str(record), "--max-proposals", "3", "--out", str(tmp_path / "C")]) == 0
    assert json.loads((tmp_path / "C" / f"{image.stem}.json").read_text())["config"]["proposals"]["max_proposals"] == 3
    # A setting the configuration's method does not take is refused in the command line's words.
    capsys.readouterr()
    assert main(["segment", str(image), "--config", str(record), "--overlap", "0.5", "--out", str(tmp_path / "D")]) == 2
    assert capsys.readouterr().err.startswith("zsseg: error: --overlap is for the methods with sliding windows")


def test_evaluate_from_python_is_the_command_line_s_evaluation(clip_dir, tmp_path):
    """Judged: `zsseg.evaluate` applies the benchmark's settings as `zsseg eval` does, and its
    report's to_dict() is the CLI's JSON but for the timings."""
    report = evaluate("ade20k-150", data_root=DATA, limit=2, clip=str(clip_dir), max_proposals=10, progress=False)
    assert main(["eval", "--dataset", "ade20k-150", "--data-root", str(DATA), "--limit", "2", "--clip", str(clip_dir),
                 "--max-proposals", "10", "--output", str(tmp_path / "cli.json"), "--quiet"]) == 0
    cli = json.loads((tmp_path / "cli.json").read_text())
    ours = json.loads(json.dumps(report.to_dict()))
    timings = ("seconds_per_image", "wall_seconds")
    assert {k: v for k, v in ours.items() if k not in timings} == {k: v for k, v in cli.items() if k not in timings}
    # the reference config's settings for ADE20K-150, not zsseg's defaults (imagenet, 0.5)
    assert ours["config"]["region"]["prompt"] == "vild" and ours["config"]["region"]["crop"]["threshold"] == 0.4
    assert ours["benchmark"]["settings"].startswith("MendelXu/zsseg.baseline configs/ade20k-150/")
    again, vocabulary = load_config(tmp_path / "cli.json")
    assert again == SegmenterConfig.from_dict(cli["config"]) and vocabulary.names == report.class_names


def test_evaluate_takes_loaded_models_as_the_segmenter_does(clip):
    """A generator or a CLIP already loaded is used as given, with the options beside it applied,
    by the oracle and by the CLIP pipeline alike; the report records their settings."""
    from zsseg.proposals import SelectiveSearch

    common = dict(data_root=DATA, limit=2, progress=False, oracle=True)
    by_name = evaluate("ade20k-150", proposals="selective-search", max_proposals=8, **common)
    loaded = evaluate("ade20k-150", proposals=SelectiveSearch(max_proposals=20), max_proposals=8, **common)
    assert loaded.to_dict()["mIoU"] == by_name.to_dict()["mIoU"] and loaded.config["proposals"] == by_name.config["proposals"]
    assert loaded.config["proposals"]["max_proposals"] == 8
    with_clip = evaluate("ade20k-150", data_root=DATA, limit=1, progress=False, clip=clip, proposals=SelectiveSearch(max_proposals=4))
    assert with_clip.config["models"]["clip"]["source"] == clip.source and with_clip.config["proposals"]["max_proposals"] == 4


def test_a_folder_run_and_a_result_s_files_from_python(clip, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, image in enumerate(ADE[:2]):
        Image.open(image).resize((96, 72)).save(folder / f"p{k}.png")
    report = segment_folder([folder], tmp_path / "out", "wall; sky; tree", clip=clip, max_proposals=4, progress=False)
    assert (report.segmented, report.failures) == (2, [])
    again = segment_folder([folder], tmp_path / "out", "wall; sky; tree", clip=clip, max_proposals=4, skip_existing=True,
                           progress=False)
    assert (again.segmented, again.skipped) == (0, 2)  # the same record: nothing to redo
    segmenter = Segmenter(clip=clip, max_proposals=4)
    result = segmenter.segment(folder / "p0.png", "wall; sky; tree")
    written = write_result(result, tmp_path / "mine", folder / "p0.png", config=segmenter.record("wall; sky; tree"))
    assert [p.name for p in written] == ["p0.png", "p0_overlay.png", "p0.json"]
    assert (tmp_path / "mine" / "p0.png").read_bytes() == (tmp_path / "out" / "p0.png").read_bytes()
    with pytest.raises(ZssegError, match="is one of the inputs"):
        write_result(result, folder, folder / "p0.png")  # the image itself is never replaced
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "p0.json").write_text("{}")
    with pytest.raises(SettingError, match="was not written by zsseg") as error:
        write_result(result, tmp_path / "theirs", folder / "p0.png")
    assert "set overwrite to replace" in str(error.value) and (tmp_path / "theirs" / "p0.json").read_text() == "{}"


def test_every_option_is_described():
    assert all(isinstance(use, str) and use for use in OPTIONS.values())
    assert {"clip", "proposals", "max_proposals", "ensemble_weight", "overlap", "temperature", "mask_fill"} <= set(OPTIONS)


# --- training recipes: built-in files, and files of the same format -----------------------------


def test_recipes_are_files_of_one_format(tmp_path):
    from zsseg.training.recipes import KINDS, built_in_recipes, load_recipe

    for kind in KINDS:
        recipes = built_in_recipes(kind)
        assert next(iter(recipes)) == "paper" and all(recipe.description for recipe in recipes.values())
        for name, recipe in recipes.items():
            path = tmp_path / f"{kind}-{name}.json"
            path.write_text(json.dumps(recipe.to_dict()))
            assert load_recipe(kind, path) == recipe == load_recipe(kind, name)
    tiny = load_recipe("proposals", "tiny")
    changed = tiny.with_train(max_iters=5, seed=None)
    assert changed.train.max_iters == 5 and changed.train.seed == tiny.train.seed and changed.model == tiny.model
    with pytest.raises(SettingError, match="^unknown config 'huge': give a recipe file, or one of the built-in recipes: paper, "):
        load_recipe("proposals", "huge")
    (tmp_path / "fcn.json").write_text(json.dumps(load_recipe("fcn", "cpu").to_dict()))
    with pytest.raises(ZssegError, match="is a recipe for training fcn, not proposals"):
        load_recipe("proposals", tmp_path / "fcn.json")
    (tmp_path / "typo.json").write_text(json.dumps({**tiny.to_dict(), "train": {"max_iter": 5}}))
    with pytest.raises(ZssegError, match="train: unknown setting 'max_iter'"):
        load_recipe("proposals", tmp_path / "typo.json")
    with pytest.raises(SettingError, match="no such file"):
        load_recipe("proposals", tmp_path / "missing.json")
