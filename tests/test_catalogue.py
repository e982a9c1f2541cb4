"""The catalogue (`zsseg.catalogue`): the names, defaults and declarations the command line
offers, torch-free, and one source for the modules that implement them."""

import subprocess
import sys

from zsseg import catalogue
from zsseg.methods import METHODS
from zsseg.proposals import GENERATORS

# What a user types before any work: help, listings, and usage errors.
LIGHT_COMMANDS = [
    ["--help"], ["segment", "--help"], ["eval", "--help"], ["train", "--help"], ["train", "proposals", "--help"],
    ["train", "fcn", "--help"], ["train", "prompts", "--help"], ["pseudo-label", "--help"], ["prompts", "select", "--help"],
    ["demo", "--help"], ["vocabularies"], ["datasets"], ["configs"], ["segment"], ["eval", "--dataset", "nope"],
    ["segment", "photo.jpg", "--classes", "cat", "--out", "out", "--proposals", "nope"],
    ["classify", "--help"], ["classify", "photo.jpg", "--classes", "cat", "--out", "out"],
    ["datasets", "prepare", "--help"], ["datasets", "check", "--help"], ["datasets", "prepare", "camvid"],
]


def test_help_listings_and_usage_errors_import_no_torch():
    """Each answers as before (status 0, or 2 for the usage errors), and torch is still not
    imported afterwards: they print at once instead of after seconds of imports."""
    code = (
        "import sys\n"
        "from zsseg.cli import main\n"
        f"for argv in {LIGHT_COMMANDS!r}:\n"
        "    try:\n"
        "        status = main(argv)\n"
        "    except SystemExit as stop:\n"
        "        status = stop.code\n"
        "    print(' '.join(argv), status, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    report = [line.rsplit(" ", 2) for line in done.stderr.splitlines() if line.rsplit(" ", 2)[-1] in ("True", "False")]
    assert len(report) == len(LIGHT_COMMANDS), done.stderr[-3000:]
    for (argv, status, torch_loaded), expected in zip(report, LIGHT_COMMANDS):
        assert argv == " ".join(expected)
        assert status in ("0", "2", "None") and torch_loaded == "False", (argv, status, torch_loaded)


def test_version_and_help_import_no_array_or_image_library():
    """`zsseg --version` and the help pages build the whole parser, and nothing more: not numpy,
    PIL or pycocotools (a quarter of a second each here), let alone torch."""
    code = (
        "import sys\n"
        "from zsseg.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('numpy', 'PIL', 'pycocotools', 'torch') if m in sys.modules), file=sys.stderr)\n"
    )
    for argv in (["--version"], ["--help"], ["segment", "--help"], ["classify", "--help"], ["eval", "--help"], ["datasets", "prepare", "--help"]):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert done.stderr.strip().splitlines()[-1] == "[]", (argv, done.stderr[-2000:])


def test_dataset_names_are_the_datasets():
    from zsseg.data.datasets import DATASETS

    assert catalogue.DATASET_NAMES == tuple(DATASETS)


def test_every_method_and_generator_is_declared_once():
    """The implementations take their traits from the catalogue's declarations, and nothing is
    declared that is not implemented (or the other way round)."""
    assert set(METHODS) == set(catalogue.METHODS)
    for name, method in METHODS.items():
        declared = catalogue.METHODS[name]
        assert method.per_pixel == declared.per_pixel, name
    assert list(GENERATORS) == list(catalogue.GENERATORS)
    for name, generator in GENERATORS.items():
        declared = catalogue.GENERATORS[name]
        assert (generator.needs_ground_truth, generator.pretrained) == (declared.needs_ground_truth, declared.pretrained), name
