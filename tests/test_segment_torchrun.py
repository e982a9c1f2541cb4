"""`zsseg segment` under torchrun: the input list is split across the processes, each image is
written by exactly one of them, the outputs equal a one-process run byte for byte, there is one
summary with the true totals, and a run stopped by a killed process or a SIGTERM is finished by
`--skip-existing`, again byte for byte."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, run

IMAGES = sorted((DATA / "coco" / "val2017").glob("*.jpg"))[:6]
TORCHRUN = ("-m", "torch.distributed.run")
# One thread per process in every run: the one-process reference included, so that outputs
# can be compared byte for byte (a different thread count may change float sums in the last bit).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def segment_args(inputs, out: Path, clip_dir: Path, *extra: str) -> list[str]:
    return ["segment", *map(str, inputs), "--classes", "person; car; sky; tree; road; grass", "--clip", str(clip_dir),
            "--max-proposals", "12", "--max-size", "320", "--out", str(out), *extra]


def outputs(folder: Path, temporaries: bool = True) -> dict[str, bytes]:
    """The files of `folder` by name; `temporaries=False` leaves out the hidden temporaries a
    killed process may leave (the next run removes them)."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if temporaries or not path.name.startswith(".")}


@pytest.fixture(scope="module")
def one_process(clip_dir, tmp_path_factory) -> dict[str, bytes]:
    """The outputs of one plain process on IMAGES."""
    out = tmp_path_factory.mktemp("one") / "labels"
    proc = run(segment_args(IMAGES, out, clip_dir), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"zsseg: {len(IMAGES)} images segmented, 0 failed; outputs in {out}"
    return outputs(out)


def test_two_processes_write_each_image_once_and_equal_one_process(one_process, clip_dir, tmp_path):
    # Three unreadable images at input positions 0, 1 and 2: processes 0, 1 and 0 get them, and
    # the summary must list them in input order, not in the order of the processes.
    bad = [tmp_path / "00a-empty.jpg", tmp_path / "00b-text.png", tmp_path / "00c-cut.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_text("not an image")
    bad[2].write_bytes(IMAGES[0].read_bytes()[:300])
    out = tmp_path / "labels"
    proc = run(["--standalone", "--nproc_per_node", "2", "--no-python", sys.executable, "-m", "zsseg",
                *segment_args([*bad, *IMAGES], out, clip_dir)], env=ONE_THREAD, module=TORCHRUN)
    assert proc.returncode != 0  # three images failed: status 1 on each process, as with one
    assert "exitcode  : 1" in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("zsseg:")]
    summaries = [line for line in lines if " segmented" in line]
    # The true totals, once: a process that wrote every image would make the count 12.
    assert summaries == [f"zsseg: {len(IMAGES)} images segmented, 3 failed; outputs in {out} "
                         "(status 1, which torchrun reports below as a ChildFailedError)"], proc.stderr
    assert "ChildFailedError" in proc.stderr.split(summaries[0])[1]  # torchrun's report comes after zsseg's lines
    failures = [line for line in lines if line not in summaries]
    assert [f.split(":")[1].strip() for f in failures] == list(map(str, bad)), failures
    assert outputs(out) == one_process


def _workers(launcher: subprocess.Popen) -> list[int]:
    """The processes torchrun started (its children)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == launcher.pid:
                children.append(int(entry.name))
    return children


def _launch(out: Path, clip_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *TORCHRUN, "--standalone", "--nproc_per_node", "2", "--no-python",
                             sys.executable, "-m", "zsseg", *segment_args(IMAGES, out, clip_dir, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE_THREAD})


def _records(out: Path) -> int:
    return sum(path.suffix == ".json" for path in out.iterdir()) if out.is_dir() else 0


def _stop_after_first_image(launcher: subprocess.Popen, out: Path, stop) -> str:
    """Wait until the run wrote its first image's outputs (or ended), call `stop()`, and return
    the launcher's stderr once it has ended."""
    deadline = time.monotonic() + 300
    before = _records(out)
    while launcher.poll() is None and time.monotonic() < deadline:
        if _records(out) > before:
            stop()
            break
        time.sleep(0.05)
    _, stderr = launcher.communicate(timeout=300)
    return stderr


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds torchrun's worker processes through /proc")
def test_a_killed_process_and_a_sigterm_leave_complete_files_that_skip_existing_finishes(one_process, clip_dir, tmp_path):
    out = tmp_path / "labels"

    # 1. kill -9 one of the two processes after the first image: torchrun stops the other.
    launcher = _launch(out, clip_dir)
    stderr = _stop_after_first_image(launcher, out, lambda: os.kill(max(_workers(launcher)), signal.SIGKILL))
    assert launcher.returncode != 0, stderr
    written = outputs(out, temporaries=False)
    assert 0 < len(written) < len(one_process), stderr  # stopped part-way
    assert all(one_process[name] == data for name, data in written.items())  # every file is complete

    # 2. SIGTERM on the launcher, as a scheduler or `timeout` sends it: every process stops with
    # its own "interrupted" line, and what is written is complete.
    launcher = _launch(out, clip_dir, "--skip-existing")
    before = len(written)
    stderr = _stop_after_first_image(launcher, out, lambda: launcher.send_signal(signal.SIGTERM))
    assert launcher.returncode != 0
    assert "zsseg: interrupted" in stderr, stderr
    assert "/zsseg/" not in "".join(line for line in stderr.splitlines() if line.lstrip().startswith("File ")), stderr
    written = outputs(out, temporaries=False)
    assert len(written) >= before and all(one_process[name] == data for name, data in written.items())

    # 3. --skip-existing finishes what is missing, under another world size too.
    proc = run(segment_args(IMAGES, out, clip_dir, "--skip-existing"), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    finished = len(written) // 3
    assert proc.stderr.strip().splitlines()[-1] == (
        f"zsseg: {len(IMAGES) - finished} image{'s' if len(IMAGES) - finished != 1 else ''} segmented, "
        f"{finished} already done (--skip-existing), 0 failed; outputs in {out}")
    assert outputs(out, temporaries=False) == one_process
    # A temporary the kill left is removed by the next run when it carries zsseg's mark; one
    # killed before its first bytes (empty) proves nothing and is left.
    assert all(not path.read_bytes() for path in out.iterdir() if path.name.startswith("."))
    shutil.rmtree(out)


def test_a_killed_runs_temporaries_are_removed_and_nothing_else(tmp_path):
    from zsseg.outputs.writers import output_paths, remove_stale_temporaries

    targets = output_paths(tmp_path, "photo")
    ours = [tmp_path / ".photo.png.k3_9ab2x.tmp", tmp_path / ".photo.json.zz0000aa.tmp"]
    others = [tmp_path / ".photo.png.notes.tmp", tmp_path / ".other.png.k3_9ab2x.tmp", tmp_path / "photo.png.k3_9ab2x.tmp",
              tmp_path / ".photo.png.K3_9AB2X.tmp", tmp_path / ".photo_overlay.png.abcdefgh.tmp"]
    ours[0].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 29 + b"tEXtSoftware\x00zsseg 0.1.0")  # cut short: the mark is in
    ours[1].write_bytes(b'{\n "software": "zsseg 0.1.0",\n "ima')
    for path in others:  # named like zsseg's (or nearly), but nothing in them proves that zsseg wrote them
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path, targets) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in others)
