"""Accuracy of the whole method with the proxy CLIP, through `zsseg eval` (proxy-CLIP figures).

    python benchmarks/proxy_clip.py --output benchmarks/out/proxy-clip
    zsseg train proposals --dataset coco-stuff --data-root ../shared/data --protocol zero-shot \\
        --config tiny --clip benchmarks/out/proxy-clip --backbone-weights none --output-dir benchmarks/out/maskformer-zs
    python benchmarks/accuracy.py --clip benchmarks/out/proxy-clip --proposal-weights benchmarks/out/maskformer-zs

Every cell is one `zsseg eval ... --output JSON` subprocess, so the shipped code paths are what
is measured. On the first --limit images of COCO-Stuff val2017, CamVid val and ADE20K val:

- classification alone: ground-truth proposals + Eq. 1 (`--proposals ground-truth`);
- the two-stage method, each training-free generator at K = --max-proposals (Eq. 1 + Eq. 2),
  beside that generator's oracle and the product GT-classification x oracle / 100 (what the
  two stages would give if their errors were independent);
- COCO-Stuff zero-shot (156 seen / 15 unseen): the MaskFormer trained on the seen classes with
  the proxy CLIP's text embeddings as classifier, its masks labelled by CLIP alone, by the
  network's head alone, and by the ensemble at lambda = 0.8; ground-truth proposals beside.
- Methods (issue 12): on every dataset the fast mode (Selective Search, mask pooling), dense
  CLIP plain and SCLIP, and with --fcn-weights the FCN + dense CLIP ensemble; on COCO-Stuff
  zero-shot also the MaskFormer in the fast mode and the FCN alone.
- Prompts (`--prompts NAME=PROMPT ...`): ground-truth proposals + Eq. 1 on COCO-Stuff zero-shot
  with each prompt (a template, `zsseg prompts select`'s file, `zsseg train prompts`' folder),
  beside the 80-template default row.

A cell whose JSON already exists in --work-dir is read, not re-run (delete it to re-run).
The proxy CLIP was trained here on a few hundred images: its numbers check that the method
works as a method and are never comparable with the paper's, which need real CLIP weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = ("coco-stuff", "camvid", "ade20k-150")
GENERATORS = ("selective-search", "contour-hierarchy")


@dataclass
class Cell:
    """One `zsseg eval` run and where its row goes in the table."""

    key: str  # file stem of its JSON
    dataset: str
    label: str
    args: list[str]
    protocol: str = "cross-dataset"
    uses_clip: bool = True
    needs_weights: bool = False
    needs_fcn: bool = False
    extra: dict = field(default_factory=dict)


def cells(limit: int, max_proposals: int, max_size: int, ensemble_weight: float, prompts: dict[str, str] | None = None) -> list[Cell]:
    """The benchmark's runs, in table order."""
    out = []
    for dataset in DATASETS:
        common = ["--dataset", dataset, "--limit", str(limit), "--max-size", str(max_size)]
        out.append(Cell(f"{dataset}-gt", dataset, "ground-truth proposals + Eq. 1", common + ["--proposals", "ground-truth"]))
        for generator in GENERATORS:
            k = ["--proposals", generator, "--max-proposals", str(max_proposals)]
            out.append(Cell(f"{dataset}-{generator}", dataset, f"{generator}, K={max_proposals} (Eq. 1 + Eq. 2)", common + k,
                            extra={"oracle_of": f"{dataset}-{generator}-oracle", "gt_of": f"{dataset}-gt"}))
            out.append(Cell(f"{dataset}-{generator}-oracle", dataset, f"{generator}, K={max_proposals}, oracle",
                            common + k + ["--oracle"], uses_clip=False))
        k = ["--proposals", GENERATORS[0], "--max-proposals", str(max_proposals)]
        out.append(Cell(f"{dataset}-fast", dataset, f"{GENERATORS[0]}, K={max_proposals}, fast (mask pooling)",
                        common + k + ["--method", "fast"]))
        for mode in ("plain", "sclip"):
            out.append(Cell(f"{dataset}-dense-{mode}", dataset, f"dense CLIP, {mode}", common + ["--method", "dense-clip", "--dense-mode", mode]))
        out.append(Cell(f"{dataset}-fcn", dataset, "FCN (COCO-Stuff seen classes) + dense CLIP, lambda=0.7",
                        common + ["--method", "fcn"], needs_fcn=True))
    common = ["--dataset", "coco-stuff", "--limit", str(limit), "--max-size", str(max_size), "--protocol", "zero-shot"]
    out.append(Cell("zs-gt", "coco-stuff", "ground-truth proposals + Eq. 1", common + ["--proposals", "ground-truth"], "zero-shot"))
    for name, prompt in (prompts or {}).items():
        out.append(Cell(f"zs-gt-prompt-{name}", "coco-stuff", f"ground-truth proposals + Eq. 1, prompt: {name}",
                        common + ["--proposals", "ground-truth", "--prompt", prompt], "zero-shot", extra={"prompt": prompt}))
    maskformer = common + ["--proposals", "maskformer"]
    for classifier, label in (("clip", "CLIP alone"), ("network", "network alone"),
                              ("ensemble", f"ensemble, lambda={ensemble_weight:g}")):
        args = maskformer + ["--classifier", classifier, "--ensemble-weight", str(ensemble_weight)]
        out.append(Cell(f"zs-maskformer-{classifier}", "coco-stuff", f"MaskFormer (seen classes), {label}", args,
                        "zero-shot", needs_weights=True))
    out.append(Cell("zs-maskformer-oracle", "coco-stuff", "MaskFormer (seen classes), oracle",
                    maskformer + ["--oracle"], "zero-shot", uses_clip=False, needs_weights=True))
    out.append(Cell("zs-maskformer-fast", "coco-stuff", f"MaskFormer (seen classes), fast (mask pooling), ensemble, lambda={ensemble_weight:g}",
                    maskformer + ["--method", "fast", "--ensemble-weight", str(ensemble_weight)], "zero-shot", needs_weights=True))
    for mode in ("plain", "sclip"):
        out.append(Cell(f"zs-dense-{mode}", "coco-stuff", f"dense CLIP, {mode}", common + ["--method", "dense-clip", "--dense-mode", mode],
                        "zero-shot"))
    for classifier, label in (("network", "FCN (seen classes) alone"), ("ensemble", "FCN (seen classes) + dense CLIP, lambda=0.7")):
        out.append(Cell(f"zs-fcn-{classifier}", "coco-stuff", label, common + ["--method", "fcn", "--classifier", classifier],
                        "zero-shot", needs_fcn=True))
    return out


def command(cell: Cell, clip: Path, weights: Path | None, data_root: Path, output: Path, fcn: Path | None = None) -> list[str]:
    args = ["zsseg", "eval", *cell.args, "--data-root", str(data_root), "--output", str(output), "--quiet"]
    if cell.uses_clip:
        args += ["--clip", str(clip)]
    if cell.needs_weights:
        args += ["--proposal-weights", str(weights)]
    if cell.needs_fcn:
        args += ["--fcn-weights", str(fcn)]
    return args


def table_rows(cells_: list[Cell], reports: dict[str, dict]) -> list[dict]:
    """One row per cell that has a report: its figures, and for two-stage cells the product
    of GT-proposal classification and the oracle (`expected`, the independent-errors guess)."""
    rows = []
    for cell in cells_:
        report = reports.get(cell.key)
        if report is None:
            continue
        row = {"key": cell.key, "dataset": cell.dataset, "protocol": cell.protocol, "method": cell.label,
               "images": report["num_images"], "mIoU": report["mIoU"], "pAcc": report["pAcc"],
               "seconds_per_image": report["seconds_per_image"]}
        if cell.protocol == "zero-shot":
            row.update({k: report.get(k) for k in ("mIoU_seen", "mIoU_unseen", "hIoU")})
        oracle, gt = reports.get(cell.extra.get("oracle_of", "")), reports.get(cell.extra.get("gt_of", ""))
        if oracle is not None and gt is not None:
            row["expected"] = gt["mIoU"] * oracle["mIoU"] / 100
        rows.append(row)
    return rows


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(rows: list[dict]) -> str:
    """The cross-dataset table and the zero-shot table, as Markdown."""
    cross = [r for r in rows if r["protocol"] == "cross-dataset"]
    zero = [r for r in rows if r["protocol"] == "zero-shot"]
    lines = []
    if cross:
        lines += ["| dataset | images | method | mIoU | GT x oracle / 100 | pAcc | s / image |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        lines += [f"| {r['dataset']} val | {r['images']} | {r['method']} | {_cell(r['mIoU'])} | "
                  f"{_cell(r.get('expected')) if 'expected' in r else ''} | {_cell(r['pAcc'])} | {r['seconds_per_image']:.2f} |"
                  for r in cross]
    if zero:
        lines += ["", "| COCO-Stuff val, zero-shot | images | mIoU(seen) | mIoU(unseen) | hIoU | mIoU | pAcc | s / image |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['images']} | {_cell(r['mIoU_seen'])} | {_cell(r['mIoU_unseen'])} | "
                  f"{_cell(r['hIoU'])} | {_cell(r['mIoU'])} | {_cell(r['pAcc'])} | {r['seconds_per_image']:.2f} |"
                  for r in zero]
    return "\n".join(lines)


def stale(cell: Cell, report: dict, args: argparse.Namespace) -> bool:
    """Whether a reused cell JSON was made with other settings than this run's."""
    from zsseg.data.datasets import load_dataset

    images = min(args.limit, len(load_dataset(cell.dataset, args.data_root, "val")))
    config = report["config"]
    proposals = config.get("proposals") or {}
    return (
        report["num_images"] != images
        or config["size"]["max_size"] != args.max_size
        or (cell.uses_clip and Path(config["clip"]["source"]).resolve() != args.clip.resolve())
        or (cell.needs_weights and Path(proposals["weights"]).resolve() != args.proposal_weights.resolve())
        or (cell.needs_fcn and Path(config["fcn"]["weights"]).resolve() != args.fcn_weights.resolve())
        or (cell.needs_weights and cell.uses_clip and config["ensemble"]["weight"] != args.ensemble_weight)
        or (proposals.get("name") in GENERATORS and proposals["max_proposals"] != args.max_proposals)
        or ("prompt" in cell.extra and _prompt_changed(cell.extra["prompt"], config["models"]["prompt"]))
    )


def _prompt_changed(prompt: str, recorded: dict) -> bool:
    """Whether the report was made with another prompt than `prompt` gives now (a file whose
    templates changed, a retrained prompt in the same folder)."""
    from zsseg.prompts.encoding import LearnedPrompt, load_prompt

    current = load_prompt(prompt)
    if isinstance(current, LearnedPrompt):
        return recorded.get("identity") != current.identity[:16]
    if "templates" in recorded:
        return recorded["templates"] != list(current.templates)
    return recorded.get("name") != current.name


def run_cell(cell: Cell, argv: list[str], log: Path, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.perf_counter()
    # `argv` is the command a user types; it runs with this interpreter's zsseg, so the
    # benchmark needs no activated environment (no `zsseg` on PATH).
    launch = [sys.executable, "-m", "zsseg", *argv[1:]] if argv[:1] == ["zsseg"] else argv
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(launch, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{cell.key} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, required=True, help="the proxy CLIP folder (benchmarks/proxy_clip.py)")
    parser.add_argument("--proposal-weights", type=Path, default=None,
                        help="MaskFormer trained zero-shot with that CLIP; without it the zero-shot MaskFormer rows are left out")
    parser.add_argument("--fcn-weights", type=Path, default=None,
                        help="FCN trained (zsseg train fcn) with that CLIP; without it the FCN rows are left out")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=20, help="first N val images of each dataset, the same for every row")
    parser.add_argument("--max-proposals", type=int, default=100)
    parser.add_argument("--max-size", type=int, default=1024)
    parser.add_argument("--ensemble-weight", type=float, default=0.8)
    parser.add_argument("--prompts", nargs="*", default=[], metavar="NAME=PROMPT",
                        help="extra zero-shot ground-truth-proposal rows, one per prompt (a template, a prompt file or folder)")
    parser.add_argument("--only", nargs="*", default=None, help="run only the cells whose key starts with one of these")
    parser.add_argument("--jobs", type=int, default=2, help="zsseg eval processes at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "out" / "accuracy",
                        help="one JSON and one log per cell (existing JSONs are reused)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "out" / "accuracy.json")
    args = parser.parse_args(argv)

    args.work_dir.mkdir(parents=True, exist_ok=True)
    prompts = dict(item.split("=", 1) for item in args.prompts)
    plan = [c for c in cells(args.limit, args.max_proposals, args.max_size, args.ensemble_weight, prompts)
            if (args.proposal_weights is not None or not c.needs_weights)
            and (args.fcn_weights is not None or not c.needs_fcn)
            and (args.only is None or any(c.key.startswith(p) for p in args.only))]
    todo = [c for c in plan if not (args.work_dir / f"{c.key}.json").is_file()]

    def job(cell: Cell) -> None:
        seconds = run_cell(cell, command(cell, args.clip, args.proposal_weights, args.data_root, args.work_dir / f"{cell.key}.json",
                                         args.fcn_weights),
                           args.work_dir / f"{cell.key}.log", args.threads)
        print(f"{cell.key}: {seconds:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(job, todo))

    reports = {c.key: json.loads((args.work_dir / f"{c.key}.json").read_text(encoding="utf-8")) for c in plan}
    for cell in plan:
        if stale(cell, reports[cell.key], args):
            raise SystemExit(f"{cell.key}.json in {args.work_dir} is from other settings; delete it to re-run")
    rows = table_rows(plan, reports)
    text = markdown(rows)
    print("proxy-CLIP figures, not comparable with the paper's:")
    print(text)
    result = {"command": " ".join(["python", "benchmarks/accuracy.py"] + (argv if argv is not None else sys.argv[1:])),
              "clip": str(args.clip), "proposal_weights": None if args.proposal_weights is None else str(args.proposal_weights),
              "fcn_weights": None if args.fcn_weights is None else str(args.fcn_weights),
              "limit": args.limit, "rows": rows, "markdown": text}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
