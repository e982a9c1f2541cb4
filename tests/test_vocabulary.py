import pytest

from zsseg import PRESETS, Vocabulary, ZssegError
from zsseg.vocabulary import as_vocabulary


def test_parse_classes_and_synonyms():
    vocab = Vocabulary.parse(" cat; sofa,  couch ;wall; ")
    assert vocab.classes == (("cat",), ("sofa", "couch"), ("wall",))
    assert vocab.names == ["cat", "sofa, couch", "wall"]
    assert vocab.display_names == ["cat", "sofa", "wall"]


def test_repeated_synonym_within_a_class_is_kept_once():
    assert Vocabulary.parse("sofa, Sofa, couch").classes == (("sofa", "couch"),)


@pytest.mark.parametrize("text", ["", " ; ;", ",,"])
def test_empty_vocabulary_is_an_error(text):
    with pytest.raises(ZssegError, match="empty"):
        Vocabulary.parse(text)


def test_duplicate_class_is_an_error():
    with pytest.raises(ZssegError, match="duplicate class name 'Cat'.*classes 1 and 3"):
        Vocabulary.parse("cat; dog; Cat")


def test_same_synonym_in_two_different_classes_is_allowed():
    # ADE20K-847 has "pot" and "pot, flowerpot": classes differ as wholes.
    assert len(Vocabulary.parse("pot; pot, flowerpot")) == 2


def test_from_file(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("# my classes\ncat\n\nsofa, couch  # furniture\nwall\n")
    vocab = Vocabulary.from_file(path)
    assert vocab.names == ["cat", "sofa, couch", "wall"] and vocab.name == "v"


def test_from_file_errors(tmp_path):
    with pytest.raises(ZssegError, match="not found"):
        Vocabulary.from_file(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ZssegError, match="UTF-8"):
        Vocabulary.from_file(tmp_path / "bad.txt")


@pytest.mark.parametrize(
    "name,size,first,last",
    [
        ("coco-stuff-171", 171, "person", "wood"),
        ("ade20k-150", 150, "wall", "flag"),
        ("ade20k-847", 847, "wall", "adding machine, totalizer, totaliser"),
        ("pascal-context-59", 59, "aeroplane", "wood"),
        ("pascal-context-459", 459, "accordion", "wool"),
        ("voc-20", 20, "aeroplane", "tv monitor"),
        ("cityscapes-19", 19, "road", "bicycle"),
        ("camvid-11", 11, "sky", "bicyclist"),
    ],
)
def test_presets(name, size, first, last):
    vocab = Vocabulary.preset(name)
    assert len(vocab) == size and vocab.names[0] == first and vocab.names[-1] == last
    assert name in PRESETS


def test_coco_stuff_order_matches_the_label_encoding():
    names = Vocabulary.preset("coco-stuff-171").names
    # 0..79 things, 80..170 stuff in COCO category-id order (detectron2 encoding).
    assert names[79] == "toothbrush" and names[80] == "banner" and names.index("wall-concrete") == 160


def test_unknown_preset_and_as_vocabulary():
    with pytest.raises(ZssegError, match="unknown vocabulary"):
        Vocabulary.preset("nope")
    assert len(as_vocabulary("voc-20")) == 20
    assert as_vocabulary(["cat", "sofa, couch"]).names == ["cat", "sofa, couch"]
