import pytest

from zsseg import PRESETS, Vocabulary, ZssegError
from zsseg.data.vocabulary import as_vocabulary


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


@pytest.mark.parametrize("text", ["dog; cat, dog", "pot; pot, flowerpot", "Dog;  cat,  DOG ", "cat, kitty; kitty", "caf\u00e9; cafe\u0301"])
def test_a_name_in_two_classes_is_a_duplicate(text):
    # With the maximum over synonyms, the class whose name another class repeats could never win.
    with pytest.raises(ZssegError, match=r"duplicate class name '[^']+' \(classes 1 and 2\)"):
        Vocabulary.parse(text)


def test_benchmark_vocabulary_with_shared_synonyms_keeps_its_classes():
    # ADE20K-847's WordNet names give "machine" to "car, ..., machine, ..." and to "machine",
    # and "screen" to four classes: each name ends up in one class at most, order kept.
    vocabulary = Vocabulary.preset("ade20k-847")
    assert len(vocabulary) == 847
    names = [synonym.lower() for synonyms in vocabulary.classes for synonym in synonyms]
    assert len(names) == len(set(names))
    assert vocabulary.classes[173] == ("machine",) and "machine" not in vocabulary.classes[14]
    assert vocabulary.classes[14][0] == "car"
    assert not any("screen" in synonyms for synonyms in vocabulary.classes)


def test_from_file(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("# my classes\ncat\n\nsofa, couch  # furniture\nwall\n")
    vocab = Vocabulary.from_file(path)
    assert vocab.names == ["cat", "sofa, couch", "wall"] and vocab.name == "v"


def test_from_file_errors(tmp_path):
    with pytest.raises(ZssegError, match="not found"):
        Vocabulary.from_file(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xc3\x28bad")  # not UTF-8, and no byte-order mark
    with pytest.raises(ZssegError, match="not UTF-8 text"):
        Vocabulary.from_file(tmp_path / "bad.txt")


@pytest.mark.parametrize("data", [
    "# my classes\ncat\ndog, puppy\n".encode("utf-8-sig"),  # Notepad's UTF-8: a BOM, then a comment line
    "cat\r\ndog, puppy\r\n".encode("utf-8-sig"),
    "# my classes\r\ncat\r\ndog, puppy\r\n".encode("utf-16"),  # Notepad's "Unicode": UTF-16 with a BOM
    "cat\ndog, puppy\n".encode("utf-16-be"),
])
def test_vocabulary_files_with_a_byte_order_mark(tmp_path, data):
    if not data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        data = b"\xfe\xff" + data
    (tmp_path / "v.txt").write_bytes(data)
    assert Vocabulary.from_file(tmp_path / "v.txt").classes == (("cat",), ("dog", "puppy"))


def test_vocabulary_file_comments_and_separators(tmp_path):
    (tmp_path / "v.txt").write_text("C# code  # a language\nsky; tree; building\n  # indented comment\nwall#2\n", encoding="utf-8")
    assert Vocabulary.from_file(tmp_path / "v.txt").classes == (("C# code",), ("sky",), ("tree",), ("building",), ("wall#2",))


@pytest.mark.parametrize("text, message", [
    ("cat\n\u200b\n", "class 2 of the vocabulary has an invisible name"),
    ("cat; \ufeff \u200d", "class 2 of the vocabulary has an invisible name"),
    ("ca\x00t\n", "holds a control character"),
    ("cat\x07\n", "holds a control character"),
])
def test_invisible_names_and_control_characters_are_refused(tmp_path, text, message):
    (tmp_path / "v.txt").write_text(text, encoding="utf-8")
    with pytest.raises(ZssegError, match=message):
        Vocabulary.from_file(tmp_path / "v.txt")
    with pytest.raises(ZssegError, match=message):
        Vocabulary.parse(text.replace("\n", ";"))


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
