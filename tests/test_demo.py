"""The web demo (`zsseg demo`): its handler on a real image, bad input, the command line, and
the page itself in a headless Chromium driven by Playwright."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from zsseg.cli import main

IMAGE = DATA / "coco" / "val2017" / "000000010363.jpg"  # a cat on a car, 640x361; one of the page's examples
CLASSES = "cat; car; cabinet, cupboard; lamp; wall; floor; bicycle"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _gradio():
    return pytest.importorskip("gradio", reason='the demo needs gradio: pip install -e ".[demo]" (or ".[test]")')


@pytest.fixture(scope="module")
def page(clip_dir):
    """The page's state as `zsseg demo` builds it, with a tiny CLIP and a small processing size."""
    _gradio()
    from functools import partial

    from zsseg.cli import _parser, explained, flag_names
    from zsseg.cli.demo import DEMO_PROPOSALS, _demo_segmenters
    from zsseg.models.loading import load_clip
    from zsseg.demo import Demo
    from zsseg.segmenter import METHODS

    parser = _parser()
    args = parser.parse_args(["demo", "--clip", str(clip_dir), "--max-size", "160"])
    return Demo(_demo_segmenters(args, load_clip(str(clip_dir))), list(METHODS), DEMO_PROPOSALS, max_proposals=10,
                max_size=160, examples=[(IMAGE, CLASSES)], explain=partial(explained, flag_names(parser, args)))


def test_examples_are_real_samples_beside_the_checkout():
    _gradio()
    from zsseg.demo import EXAMPLES, example_images

    if not (Path(__file__).resolve().parents[2] / "shared" / "data").is_dir():
        pytest.skip("no ../shared/data beside this checkout: the page then offers no examples")
    examples = example_images()
    assert len(examples) == len(EXAMPLES) == 3 and all(path.is_file() for path, _ in examples)
    assert example_images(Path("/nonexistent")) == []


def _check_outputs(outputs, vocabulary: list[str]):
    """The handler's outputs agree with each other and with the files `zsseg segment` writes."""
    overlay, table, files, summary = outputs
    width, height = Image.open(IMAGE).size
    assert [Path(f).name for f in files] == [f"{IMAGE.stem}.png", f"{IMAGE.stem}_overlay.png", f"{IMAGE.stem}.json"]
    assert overlay == files[1]
    shown = Image.open(overlay)
    assert shown.height >= height and shown.width > width  # the legend on the right
    labels = np.array(Image.open(files[0]))
    assert labels.shape == (height, width)
    record = json.loads(Path(files[2]).read_text())
    assert record["vocabulary"] == vocabulary and record["software"].startswith("zsseg")
    assert table, "no class present"
    assert sum(share for _, share, _ in table) == pytest.approx(100, abs=0.05)
    labelled = int((labels != 255).sum())
    assert sum(pixels for _, _, pixels in table) == labelled == height * width - record["unlabeled_area"]
    areas = {entry["name"]: entry["area"] for entry in record["classes"]}
    for name, share, pixels in table:
        assert areas[name] == pixels == int((labels == vocabulary.index(name)).sum())
        assert share == pytest.approx(100 * pixels / labelled, abs=0.01)
    assert [row[2] for row in table] == sorted((row[2] for row in table), reverse=True)
    assert f"{width}x{height} image, {len(table)} of {len(vocabulary)} classes present" in summary


@pytest.mark.parametrize("method", ["two-stage", "fast", "dense-clip"])
def test_handler_segments_a_real_image(page, method):
    outputs = page.segment(str(IMAGE), CLASSES, method, "selective-search", 10)
    _check_outputs(outputs, ["cat", "car", "cabinet, cupboard", "lamp", "wall", "floor", "bicycle"])
    assert Path(outputs[0]).is_relative_to(page.results)


def test_handler_offers_what_can_run(page):
    assert page.methods == ["two-stage", "fast", "dense-clip"]  # fcn needs --fcn-weights
    assert "maskformer" not in page.proposals and {"selective-search", "contour-hierarchy"} <= set(page.proposals)
    assert "ground-truth" not in page.proposals  # the oracle needs a label map
    assert any("--proposal-weights" in reason for reason in page.left_out)
    assert any("--fcn-weights" in reason for reason in page.left_out)


def test_handler_reuses_one_clip(page):
    first = page.segmenter("two-stage", "selective-search", 10)
    assert page.segmenter("two-stage", "selective-search", 10) is first
    other = page.segmenter("fast", "contour-hierarchy", 5)
    assert other is not first and other.clip is first.clip and other.proposals.max_proposals == 5


def test_pretrained_proposals_are_offered_as_given_and_loaded_once(clip_dir, sam_dir):
    """`zsseg demo --proposals sam:FOLDER`: the page offers that SAM beside the training-free
    generators (never a default hub model it was not asked for), and every K shares one SAM."""
    _gradio()
    from zsseg.cli import _parser
    from zsseg.cli.demo import DEMO_PROPOSALS, _demo_segmenters
    from zsseg.models.loading import load_clip
    from zsseg.demo import Demo
    from zsseg.segmenter import METHODS

    spec = f"sam:{sam_dir}"
    args = _parser().parse_args(["demo", "--clip", str(clip_dir), "--proposals", spec, "--max-size", "160"])
    demo = Demo(_demo_segmenters(args, load_clip(str(clip_dir))), list(METHODS), DEMO_PROPOSALS, proposal=spec,
                max_proposals=10, max_size=160, examples=[(IMAGE, CLASSES)])
    assert demo.proposals[0] == spec and "sam" not in demo.proposals and "mask2former" not in demo.proposals
    ten, five = demo.segmenter("two-stage", spec, 10), demo.segmenter("fast", spec, 5)
    assert ten.proposals.model is five.proposals.model
    assert (ten.proposals.max_proposals, five.proposals.max_proposals) == (10, 5)
    assert demo.run(str(IMAGE), CLASSES, "two-stage", spec, 10).table, "a confident SAM labels the image"


@pytest.mark.parametrize("image, classes, method, k, message", [
    (None, CLASSES, "two-stage", 10, "no image: upload one"),
    (IMAGE, "", "two-stage", 10, "the vocabulary is empty"),
    (IMAGE, " ; ;", "two-stage", 10, "the vocabulary is empty"),
    (IMAGE, "dog; cat, dog", "two-stage", 10, "duplicate class name 'dog' (classes 1 and 2)"),
    (IMAGE, "; ".join(f"class {i}" for i in range(1001)), "two-stage", 10, "1001 classes; this page takes at most 1000"),
    (IMAGE, "x" * 20_001, "two-stage", 10, "this page takes at most 20,000"),
    (IMAGE, CLASSES, "fcn", 10, "unknown method 'fcn'; this page offers two-stage, fast, dense-clip"),
    (IMAGE, CLASSES, "two-stage", 0, "K (max proposals) must be a whole number from 1 to 300"),
    (IMAGE, CLASSES, "two-stage", 2.5, "K (max proposals) must be a whole number from 1 to 300"),
    (Path("/etc/hostname"), CLASSES, "two-stage", 10, "this page reads only uploaded images and its examples"),
])
def test_handler_bad_input(page, image, classes, method, k, message):
    gr = _gradio()
    with pytest.raises(gr.Error) as raised:
        page.segment(None if image is None else str(image), classes, method, "selective-search", k)
    assert message in str(raised.value.message)


def test_handler_refuses_huge_images_before_decoding(page, tmp_path, monkeypatch):
    gr = _gradio()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # where Gradio puts uploads
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 5001)).save(huge)  # 40,008,000 pixels, a few kB
    with pytest.raises(gr.Error, match=r"8000x5001 \(40,008,000 pixels\), above the limit of 40,000,000 pixels"):
        page.segment(str(huge), CLASSES, "two-stage", "selective-search", 10)


def test_handler_escapes_names_in_messages(page):
    gr = _gradio()
    with pytest.raises(gr.Error) as raised:
        page.segment(str(IMAGE), "<b>x</b>; <b>x</b>", "two-stage", "selective-search", 10)
    assert "&lt;b&gt;x&lt;/b&gt;" in raised.value.message  # Gradio renders error messages as HTML


def test_built_in_vocabularies_fill_the_classes():
    _gradio()
    from zsseg.demo import CUSTOM, _preset_classes
    from zsseg.data.vocabulary import PRESETS, Vocabulary

    for name in PRESETS:
        assert Vocabulary.parse(_preset_classes(name)).names == Vocabulary.preset(name).names
    assert _preset_classes(CUSTOM) == {"__type__": "update"}


def test_cli_without_gradio_says_how_to_install(clip_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now fails as if it were not installed
    assert main(["demo", "--clip", str(clip_dir)]) == 2
    err = capsys.readouterr().err
    assert err == 'zsseg: error: the web demo needs gradio, which is not installed: pip install "zsseg[demo]"\n'


def test_cli_loading_errors_are_one_line(tmp_path, capsys):
    _gradio()
    missing = tmp_path / "no-such-clip"
    assert main(["segment", str(IMAGE), "--classes", "cat", "--clip", str(missing), "--out", str(tmp_path / "out")]) == 2
    segment_error = capsys.readouterr().err
    assert main(["demo", "--clip", str(missing)]) == 2
    assert capsys.readouterr().err == segment_error and segment_error.count("\n") == 1


def test_cli_refuses_settings_the_page_cannot_start_with(clip_dir, capsys):
    _gradio()
    assert main(["demo", "--clip", str(clip_dir), "--proposals", "maskformer"]) == 2
    assert capsys.readouterr().err == ("zsseg: error: the maskformer proposals need trained weights: --proposal-weights (the output "
                                       "folder of `zsseg train proposals`, or an authors' model_final.pth)\n")
    assert main(["demo", "--clip", str(clip_dir), "--max-proposals", "301"]) == 2
    assert capsys.readouterr().err == "zsseg: error: the demo takes K (--max-proposals) from 1 to 300, got 301\n"


def test_cli_port_in_use_is_one_line(clip_dir, capsys):
    _gradio()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--clip", str(clip_dir), "--max-size", "64", "--port", str(port)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"zsseg: error: cannot serve on 127.0.0.1:{port}: ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(clip_dir: Path, port: int, env: dict | None = None) -> subprocess.Popen:
    """`zsseg demo` in its own process, once it says where it serves."""
    server = subprocess.Popen(
        [sys.executable, "-m", "zsseg", "demo", "--clip", str(clip_dir), "--max-size", "160", "--max-proposals", "10",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        # As from a terminal, where Ctrl-C reaches it: a suite started in the background by a
        # shell without job control (`pytest &` in a script) has SIGINT ignored, and children
        # inherit that, so the test's "Ctrl-C" would be lost.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "the demo is at" in line:
            assert line == f"zsseg: the demo is at http://127.0.0.1:{port} (Ctrl-C stops it)\n"
            return server
    server.kill()
    pytest.fail(f"zsseg demo did not start: {''.join(lines)}")


def _ctrl_c(server: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C to a running `zsseg demo`, which must then stop within a minute; its output. A
    server that does not stop is killed, not left behind, and the test fails saying so."""
    server.send_signal(signal.SIGINT)
    try:
        return server.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        _, err = server.communicate()
        pytest.fail(f"zsseg demo was still running 60 s after Ctrl-C; it was killed. Its stderr ends: {err[-2000:]}")


def _toast(browser_page, text: str) -> None:
    """Waits for the error toast that says `text`, and closes it if it is still there: Gradio
    closes it itself 10 s after it is shown, which on a busy machine can come first."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    toast = browser_page.locator(".toast-body", has_text=text).first
    toast.wait_for(timeout=30_000)
    try:
        toast.locator("button").first.click(timeout=5_000)
    except PlaywrightTimeout:
        toast.wait_for(state="detached", timeout=1_000)  # gone by itself; anything else fails the test


def test_bad_uploads_and_api_values_are_one_line_messages(clip_dir, tmp_path):
    """Through the running page's API, as a script (or a browser) sends them: each bad upload or
    value is the page's own one-line message, naming the upload by its file name; the server
    prints no traceback; and its uploads are gone when it stops."""
    _gradio()
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from test_safety import _png_header_only

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    huge = _png_header_only(tmp_path / "huge.png", 20000, 15000)  # over Pillow's own limit too
    cases = [
        (empty, CLASSES, "two-stage", "selective-search", 10, "empty.png: not an image file"),
        (text, CLASSES, "two-stage", "selective-search", 10, "notes.png: not an image file"),
        (huge, CLASSES, "two-stage", "selective-search", 10, "huge.png: image has 300,000,000 pixels, above the limit"),
        (IMAGE, CLASSES, "two-stage", "selective-search", 0, "K (max proposals) must be a whole number from 1 to 300, got 0"),
        (IMAGE, CLASSES, "two-stage", "selective-search", 2.5, "K (max proposals) must be a whole number"),
        (IMAGE, CLASSES, "no-such-method", "selective-search", 10, "unknown method 'no-such-method'"),
        (IMAGE, CLASSES, "two-stage", "nothing", 10, "unknown proposals 'nothing'"),
        (IMAGE, "", "two-stage", "selective-search", 10, "the vocabulary is empty"),
    ]
    port = _free_port()
    temp = tmp_path / "server-tmp"
    temp.mkdir()
    (temp / "zsseg-demo-ran").write_text("")  # a file of ours, which must stay
    server = _start_server(clip_dir, port, env={"TMPDIR": str(temp)})
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for image, classes, method, proposal, k, message in cases:
            with pytest.raises(AppError) as raised:
                client.predict(handle_file(str(image)), classes, method, proposal, k, api_name="/segment")
            shown = str(raised.value)
            assert message in shown, (image.name, k, shown)
            assert "/tmp" not in shown and "gradio" not in shown.lower(), shown
    finally:
        out, err = _ctrl_c(server)
    assert "Traceback" not in err and "Error" not in out, err[-3000:]
    assert sorted(p.name for p in temp.iterdir()) == ["zsseg-demo-ran"], "uploads and results are removed with the page"


def test_page_in_a_real_browser(clip_dir, tmp_path):
    _gradio()
    sync_api = pytest.importorskip("playwright.sync_api", reason='Playwright is not installed: pip install -e ".[test]"')
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no Chromium to drive: apt-get install chromium (Playwright's own browser download is not used)")
    port = _free_port()
    server = _start_server(clip_dir, port)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
            try:
                view = browser.new_page(viewport={"width": 1400, "height": 1100})
                view.set_default_timeout(60_000)
                view.goto(f"http://127.0.0.1:{port}/")
                view.locator("#run").click()  # nothing uploaded yet
                _toast(view, "no image: upload one, or pick one of the examples")

                vocabularies = view.get_by_label("Built-in vocabulary (fills the classes)")
                vocabularies.click()
                view.get_by_role("option", name="voc-20").click()
                view.wait_for_function("document.querySelector('#classes textarea').value.startsWith('aeroplane; bicycle; bird;')")

                view.locator("#image input[type=file]").set_input_files(str(IMAGE))
                # Uploaded once the file's download link (the server's copy) is shown. Not the file
                # name as text: the finished file row writes it as two spans, "000000010363" and
                # ".jpg", so only the short-lived progress line matched, and a poll that came
                # after it (on a busy machine) waited out its minute.
                view.locator(f'#image a[download="{IMAGE.name}"]').wait_for()
                view.locator("#classes textarea").fill("dog; cat, do")
                view.locator("#classes textarea").press_sequentially("g")  # typed, as a user does
                sync_api.expect(vocabularies).to_have_value("(your classes)")  # typed classes are no preset
                view.locator("#run").click()
                _toast(view, "duplicate class name 'dog' (classes 1 and 2)")

                view.locator("#classes textarea").fill(CLASSES)
                view.get_by_label("Method").click()
                view.get_by_role("option", name="dense-clip").click()  # the tiny random CLIP's proposals all get one class
                view.locator("#run").click()
                view.wait_for_function("document.querySelector('#summary').innerText.includes('classes present')")
                view.wait_for_function("(() => { const i = document.querySelector('#overlay img'); return i && i.complete && i.naturalWidth > 0 })()")
                width, height = view.evaluate("(() => { const i = document.querySelector('#overlay img'); return [i.naturalWidth, i.naturalHeight] })()")
                assert width > 640 and height >= 361  # the image and its legend

                links = {Path(link.get_attribute("href")).name: link.get_attribute("href")
                         for link in view.locator("#files a[href]").all()}
                assert set(links) >= {f"{IMAGE.stem}.png", f"{IMAGE.stem}_overlay.png", f"{IMAGE.stem}.json"}
                record = view.request.get(links[f"{IMAGE.stem}.json"]).json()
                labelled = sum(entry["area"] for entry in record["classes"])
                table = view.locator("#table").inner_text()
                assert "share of labelled pixels (%)" in table
                for entry in record["classes"]:  # each class present, with its share and pixel count
                    assert entry["name"] in table and str(entry["area"]) in table
                    assert re.search(rf"\b{round(100 * entry['area'] / labelled, 2):g}\b", table)
                summary = view.locator("#summary").inner_text()
                assert f"640x361 image, {len(record['classes'])} of 7 classes present" in summary

                import httpx  # gradio's; faster than Playwright's request API for 51 MB

                too_big = {"files": ("big.jpg", b"\0" * (51 * 1024 * 1024), "image/jpeg")}
                upload = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files=too_big, timeout=60)
                assert upload.status_code == 413  # refused by the upload limit (50 MB), before zsseg sees it

                screenshot = tmp_path / "zsseg-demo.png"
                view.screenshot(path=str(screenshot), full_page=True)
                print(f"screenshot: {screenshot}")
            finally:
                browser.close()
    finally:
        out, err = _ctrl_c(server)
    assert server.returncode == 130 and err.endswith("zsseg: interrupted\n") and "Traceback" not in err, err
    assert out == ""  # nothing from Gradio
