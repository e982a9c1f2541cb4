"""The web demo: a Gradio page for segmenting your own photos (`zsseg demo`).

    pip install "zsseg[demo]"
    zsseg demo --clip openai/clip-vit-base-patch16     # then open http://127.0.0.1:7860

The page takes an image, class names (typed, `;` between classes and `,` between synonyms, or
filled in from a built-in vocabulary), the method, the proposal generator and K. It shows the
overlay with its legend and a table of the classes present with their share of the labelled
pixels, and offers the files `zsseg segment` writes (label PNG, overlay, JSON) for download.

CLIP is loaded once, at start. The `Segmenter`s for the settings chosen on the page share it and
are kept in a small cache, so changing the method, proposals or K never reloads CLIP. Methods
and generators that cannot be built with what was given at start (the fcn method or the
maskformer proposals without their trained weights) are not offered.

Limits, which bound what one request can cost:

- uploads over `MAX_UPLOAD` (50 MB) are refused by Gradio before they reach zsseg;
- an upload is taken as a file (Gradio does not decode it): zsseg checks it before any decode,
  and images over `MAX_PIXELS` (40 million pixels, tighter than `zsseg.data.images.MAX_PIXELS`) are
  refused from their header; an empty file or one that is not an image is one line;
- every value the page's API receives is checked by zsseg (K a whole number from 1 to `MAX_K`,
  the method and proposals among those offered), so a bad request from a script gets one line
  too, never a server traceback; messages name an upload by its file name, never by the
  server's temporary path;
- a vocabulary has at most `MAX_CLASSES` classes, typed in at most `MAX_CLASSES_CHARS`
  characters;
- requests run one at a time; at most `QUEUE_SIZE` wait, later ones are turned away;
- the page reads no path from the user: the handler reads only images that Gradio uploaded
  into its upload folder and the example images fixed at start. Uploads go to a temporary
  folder of the page's own (not Gradio's shared one, which keeps growing), and results to
  another (the last `KEPT_RESULTS` requests' files are kept); both are removed at exit;
- the server binds 127.0.0.1 (this machine only) unless told otherwise; Gradio's analytics
  and its run history are off (nothing is sent anywhere, no run is kept in the browser).
"""

from __future__ import annotations

import os

# Read by gradio when it starts: no analytics or version check (nothing is sent anywhere), and
# no run history kept in the browser (which could offer to upload the photos to a hub).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["GRADIO_RUN_HISTORY"] = "False"

import atexit  # noqa: E402
import html  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import weakref  # noqa: E402
from collections import OrderedDict, deque  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

# Gradio keeps uploads, and folders of its own that it makes when the page starts, under
# GRADIO_TEMP_DIR, which it reads when imported and at every upload: a folder of this process's
# own (not Gradio's shared one, which keeps growing), removed at exit.
UPLOADS = Path(tempfile.mkdtemp(prefix="zsseg-demo-uploads-"))
os.environ["GRADIO_TEMP_DIR"] = str(UPLOADS)
atexit.register(shutil.rmtree, UPLOADS, True)

import gradio as gr  # noqa: E402

from .errors import SettingError, ZssegError  # noqa: E402
from .data.images import MAX_PIXELS as READER_MAX_PIXELS, read_image  # noqa: E402
from .segmenter import PER_PIXEL_METHODS, Segmenter  # noqa: E402
from .data.vocabulary import PRESETS, Vocabulary  # noqa: E402
from .outputs.writers import write_outputs  # noqa: E402

MAX_UPLOAD = "50mb"  # Gradio's max_file_size: a 40 MP JPEG is 10-20 MB
MAX_PIXELS = min(40_000_000, READER_MAX_PIXELS)  # about 7700x5200; decoding one takes 120 MB
MAX_K = 300
MAX_CLASSES = 1000  # ADE20K-847, the largest built-in vocabulary, fits
MAX_CLASSES_CHARS = 20_000  # ADE20K-847 with its synonyms is 12,559
QUEUE_SIZE = 16
CACHED_SEGMENTERS = 8
KEPT_RESULTS = 32
CUSTOM = "(your classes)"

# (image under the repository's parent, classes): the real samples of ../shared/data, offered
# where they are present (a source checkout beside the project's shared data), else left out.
EXAMPLES = [
    ("shared/data/coco/val2017/000000010363.jpg", "cat; car; cabinet, cupboard; lamp; wall; floor; bicycle"),
    ("shared/data/ADEChallengeData2016/images/validation/ADE_val_00000126.jpg",
     "bed; window; curtain, drape; table, desk; chair; lamp; mirror; wall; floor; ceiling"),
    ("shared/data/cityscapes/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
     "road; sidewalk, pavement; building; car; tree; grass; sky; traffic sign; pole"),
]

# Builds the segmenter for (method, proposals, K); proposals and K are None for the per-pixel
# methods. It raises ZssegError for settings that cannot run (a generator without its weights).
SegmenterFactory = Callable[[str, "str | None", "int | None"], Segmenter]


@dataclass
class PageResult:
    """What one request returns: the page's outputs, as files and plain values.

    Attributes:
        overlay: path of the overlay PNG (the image blended with the class colours, legend on
            the right), as `zsseg segment` writes it.
        table: one row per class present, largest first: [name, share of the labelled pixels
            in %, pixel count].
        files: the label PNG, the overlay PNG and the JSON record (`zsseg.outputs.writers`).
        summary: one line of Markdown: size, classes present, unlabelled share, time.
    """

    overlay: str
    table: list[list]
    files: list[str]
    summary: str

    def outputs(self) -> tuple:
        return self.overlay, self.table, self.files, self.summary


def example_images(root: Path | None = None) -> list[tuple[Path, str]]:
    """The `EXAMPLES` present under `root` (default: the parent of the source checkout)."""
    root = Path(__file__).resolve().parents[3] if root is None else root
    return [(root / path, classes) for path, classes in EXAMPLES if (root / path).is_file()]


class Demo:
    """The page's state: the segmenters (one loaded CLIP shared by all), and its results folder.

    Args:
        make_segmenter: builds a `Segmenter` for (method, proposals, K) around the loaded CLIP.
        methods, proposals: the methods and generators to offer; those that `make_segmenter`
            cannot build (missing weights) are left out, and `left_out` says why.
        method, proposal, max_proposals: the page's initial choices; an error here is the
            caller's (ZssegError), since the page could not run as asked.
        max_size: the longer side images are processed at (shown on the page).
        max_pixels: images above it are refused before decoding.
        examples: (image, classes) pairs offered on the page; the only files besides uploads
            that the handler reads.
        explain: an error's message for `left_out` and the page (the command line names its
            flags there: `SettingError.naming`).
    """

    def __init__(self, make_segmenter: SegmenterFactory, methods: list[str], proposals: list[str], method: str = "two-stage",
                 proposal: str | None = None, max_proposals: int = 100, max_size: int | None = None,
                 max_pixels: int = MAX_PIXELS, examples: list[tuple[Path, str]] = (), explain: Callable[[ZssegError], str] = str):
        if not 1 <= max_proposals <= MAX_K:
            raise SettingError("max_proposals", f"the demo takes K ({{setting}}) from 1 to {MAX_K}, got {max_proposals}")
        self._make = make_segmenter
        self.explain = explain
        self._segmenters: OrderedDict[tuple, Segmenter] = OrderedDict()
        self._lock = threading.Lock()
        self.max_proposals, self.max_size, self.max_pixels = max_proposals, max_size, max_pixels
        self.examples = [(Path(image).resolve(), classes) for image, classes in examples]
        self.left_out: list[str] = []
        proposal = proposal if proposal is not None else proposals[0]
        proposals = list(proposals) if proposal in proposals else [proposal, *proposals]  # "NAME:MODEL" as given at start
        self.segmenter(method, proposal, max_proposals)  # the initial settings must work
        self.method, self.proposal = method, proposal
        self.methods = [m for m in methods if self._offer(m, proposal if m not in PER_PIXEL_METHODS else None, f"method {m}")]
        probe = method if method not in PER_PIXEL_METHODS else "two-stage"
        self.proposals = [p for p in proposals if self._offer(probe, p, f"proposals {p}")]
        self.results = Path(tempfile.mkdtemp(prefix="zsseg-demo-"))
        self._kept: deque[Path] = deque()
        weakref.finalize(self, shutil.rmtree, self.results, True)

    def _offer(self, method: str, proposal: str | None, what: str) -> bool:
        try:
            self.segmenter(method, proposal, self.max_proposals)
            return True
        except ZssegError as error:
            self.left_out.append(f"{what}: {self.explain(error)}")
            return False

    def segmenter(self, method: str, proposal: str | None, k: int | None) -> Segmenter:
        """The cached segmenter for these settings (built on first use, sharing the CLIP)."""
        key = (method, None, None) if method in PER_PIXEL_METHODS else (method, proposal, k)
        with self._lock:
            if key in self._segmenters:
                self._segmenters.move_to_end(key)
                return self._segmenters[key]
        segmenter = self._make(*key)
        with self._lock:
            self._segmenters[key] = segmenter
            while len(self._segmenters) > CACHED_SEGMENTERS:
                self._segmenters.popitem(last=False)
        return segmenter

    def segment(self, image: str | None, classes: str, method: str, proposal: str, k: float,
                progress: gr.Progress = gr.Progress()) -> tuple:
        """The page's handler: `image` is the path Gradio gives an uploaded file; returns the
        outputs of `PageResult`. Bad input is a `gr.Error` with zsseg's one-line message, the
        upload named by its file name (the server's temporary path is nobody's business)."""
        try:
            return self.run(image, classes, method, proposal, k, progress).outputs()
        except ZssegError as error:
            message = str(error)
            if image:
                for path in {str(image), str(Path(image).resolve())}:
                    message = message.replace(path, Path(image).name)
            raise gr.Error(html.escape(message, quote=False), print_exception=False) from None  # Gradio shows it as HTML

    def run(self, image: str | None, classes: str, method: str, proposal: str, k: float,
            progress: Callable = lambda *args, **kwargs: None) -> PageResult:
        """`segment` with ZssegError for bad input, for callers other than the page."""
        start = time.perf_counter()
        if not image:
            raise ZssegError("no image: upload one, or pick one of the examples")
        vocabulary = self.vocabulary(classes)
        if method not in self.methods:
            raise ZssegError(f"unknown method '{method}'; this page offers {', '.join(self.methods)}")
        per_pixel = method in PER_PIXEL_METHODS
        if not per_pixel and proposal not in self.proposals:
            raise ZssegError(f"unknown proposals '{proposal}'; this page offers {', '.join(self.proposals)}")
        if not per_pixel and not _whole_number(k, 1, MAX_K):
            raise ZssegError(f"K (max proposals) must be a whole number from 1 to {MAX_K}, got {k}")
        path = self._readable(image)
        progress(0.05, desc="reading the image")
        pixels = read_image(path, max_pixels=self.max_pixels)
        progress(0.15, desc="preparing the method")
        segmenter = self.segmenter(method, None if per_pixel else proposal, None if per_pixel else int(k))
        progress(0.25, desc="encoding the class names")
        segmenter.prepare(vocabulary)
        progress(0.4, desc=f"segmenting ({method}{'' if per_pixel else f', {proposal}, K={int(k)}'})")
        result = segmenter.segment(pixels, vocabulary)
        progress(0.9, desc="writing the results")
        files = self._write(path, pixels, result)
        areas = result.class_areas()
        labelled = sum(areas.values())
        table = [[name, round(100 * area / labelled, 2), area] for name, area in sorted(areas.items(), key=lambda item: -item[1])]
        height, width = result.image_size
        unlabelled = 100 * (1 - labelled / (height * width))
        if not areas:
            gr.Warning("No pixel was labelled: no proposal covered the image. Try more proposals (K) or another generator.")
        summary = (f"{width}x{height} image, {len(areas)} of {len(vocabulary)} classes present, "
                   f"{unlabelled:.1f}% unlabelled; {time.perf_counter() - start:.1f} s")
        return PageResult(str(files[1]), table, [str(f) for f in files], summary)

    def vocabulary(self, classes: str | None) -> Vocabulary:
        """The typed classes as a `Vocabulary` (its errors: empty, duplicate names, ...)."""
        classes = classes or ""
        if len(classes) > MAX_CLASSES_CHARS:
            raise ZssegError(f"the classes are {len(classes):,} characters long; this page takes at most {MAX_CLASSES_CHARS:,}")
        vocabulary = Vocabulary.parse(classes)
        if len(vocabulary) > MAX_CLASSES:
            raise ZssegError(f"{len(vocabulary)} classes; this page takes at most {MAX_CLASSES}")
        return vocabulary

    def _readable(self, image: str) -> Path:
        """The image's path, if it is one the page may read: an upload in Gradio's cache
        folder or an example. Gradio checks this too; this keeps it true whatever the caller."""
        path = Path(image).resolve()
        uploads = Path(gr.utils.get_upload_folder()).resolve()
        if path.is_relative_to(uploads) or any(path == example for example, _ in self.examples):
            return path
        raise ZssegError("this page reads only uploaded images and its examples")

    def _write(self, image: Path, pixels, result) -> list[Path]:
        """The files of `zsseg segment` in a fresh folder of the page's own; older results
        beyond the last `KEPT_RESULTS` are removed (Gradio has copied them by then)."""
        folder = Path(tempfile.mkdtemp(dir=self.results))
        stem = re.sub(r"[^\w.-]+", "_", image.stem).strip("._")[:80] or "image"
        files = write_outputs(folder, stem, pixels, result.label_map, result.class_names, image.name)
        self._kept.append(folder)
        while len(self._kept) > KEPT_RESULTS:
            shutil.rmtree(self._kept.popleft(), ignore_errors=True)
        return files

    def page(self) -> gr.Blocks:
        """The Gradio page around `segment`."""
        with gr.Blocks(title="zsseg: open-vocabulary segmentation", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
            gr.Markdown(
                "## zsseg: open-vocabulary semantic segmentation\n"
                "Upload a photo and name the classes to find: `;` between classes, `,` between synonyms "
                "(`cat; sofa, couch; wall`). Every pixel gets one of them."
            )
            with gr.Row():
                with gr.Column():
                    # A file, not gr.Image: Gradio would decode it first, where a broken or huge
                    # upload fails with no message; zsseg checks it before any decode.
                    image = gr.File(type="filepath", label="Image (JPEG, PNG, TIFF, WebP, ...)", elem_id="image")
                    preset = gr.Dropdown([CUSTOM, *PRESETS], value=CUSTOM, label="Built-in vocabulary (fills the classes)",
                                         allow_custom_value=True)
                    classes = gr.Textbox(label="Classes", placeholder="cat; sofa, couch; wall", lines=2,
                                         max_length=MAX_CLASSES_CHARS, elem_id="classes")
                    with gr.Row():
                        # Values outside the lists (from a script) reach the handler, which names them.
                        method = gr.Dropdown(self.methods, value=self.method, label="Method", allow_custom_value=True)
                        proposal = gr.Dropdown(self.proposals, value=self.proposal, label="Proposals (two-stage, fast)",
                                               allow_custom_value=True)
                    k = gr.Number(value=self.max_proposals, label=f"K: max proposals, 1 to {MAX_K} (two-stage, fast)", elem_id="k")
                    run = gr.Button("Segment", variant="primary", elem_id="run")
                with gr.Column():
                    overlay = gr.Image(type="filepath", label="Overlay", interactive=False, format="png", elem_id="overlay",
                                       buttons=[])  # they would cover the legend; the files below have it
                    summary = gr.Markdown(elem_id="summary")
                    table = gr.Dataframe(headers=["class", "share of labelled pixels (%)", "pixels"], datatype=["str", "number", "number"],
                                         interactive=False, label="Classes present", elem_id="table")
                    files = gr.File(label="Label PNG, overlay, JSON (as `zsseg segment` writes them)", file_count="multiple",
                                    interactive=False, elem_id="files")
            if self.examples:
                gr.Examples([[str(path), text] for path, text in self.examples], inputs=[image, classes], cache_examples=False)
            size = f"processed with the longer side at most {self.max_size} px; " if self.max_size else ""
            gr.Markdown(f"Images up to {MAX_UPLOAD.upper()} and {self.max_pixels / 1e6:g} million pixels, {size}"
                        "one request runs at a time.")
            preset.change(_preset_classes, preset, classes, queue=False)
            classes.input(lambda: CUSTOM, None, preset, queue=False)  # typed classes are no longer the preset
            run.click(self.segment, [image, classes, method, proposal, k], [overlay, table, files, summary],
                      concurrency_limit=1)
        return page

    def launch(self, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
        """Serve the page (queued, one request at a time); unless `block`, return it once it
        serves (its `close()` stops it). A port in use is an OSError."""
        page = self.page()
        page.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
        page.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, share=False, ssr_mode=False,
                    allowed_paths=[str(path) for path, _ in self.examples], prevent_thread_lock=not block, quiet=True)
        return page


def _whole_number(value, low: int, high: int) -> bool:
    """Whether `value` (from a form or an API call: int, float, str, None) is a whole number in [low, high]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return number == number and number == int(number) and low <= number <= high


def _preset_classes(name: str) -> str | dict:
    """The classes box's text for a built-in vocabulary (left as it is for CUSTOM)."""
    if name not in PRESETS:
        return gr.update()
    return "; ".join(Vocabulary.preset(name).names)


__all__ = ["Demo", "PageResult", "example_images", "MAX_PIXELS", "MAX_UPLOAD", "MAX_K", "MAX_CLASSES", "QUEUE_SIZE"]
