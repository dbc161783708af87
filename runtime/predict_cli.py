"""`resnet-edge predict ARTIFACTS PATH... [-k 3] [--json FILE] [--backend B] [--invert auto|yes|no]`.

A PATH is a file, a directory (its images, recursively) or a glob. Files are decoded on a thread pool while the
model runs, batch by batch, under a progress bar. A file that cannot be classified gets one sentence; the rest
go on, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import glob
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from resnet_edge.cli_util import cli_errors, make_console
from resnet_edge.errors import InvalidInput, ToolkitError

console = make_console()
err = make_console(stderr=True)
Opt = typer.Option
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".npy")  # what runtime.preprocess decodes
TABLE_ROWS = 40  # more files than this: the first rows, then a count (all of them go to --json)


def expand(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to classify, in the order given (a directory's and a glob's sorted), and (path, sentence) for each
    PATH that names none."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append((text, f"{text} is a directory with no images ({', '.join(IMAGE_SUFFIXES)})."))
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                problems.append((text, f"No file matches {text}."))
            files += found
        else:
            problems.append((text, f"{text} does not exist."))
    return files, problems


AHEAD_BATCHES = 2  # decoded images waiting for inference: at most this many batches' worth


def decode_ahead(pool: Executor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """``fn`` over ``items`` in ``pool``, in order, with at most ``ahead`` results decoded and not yet taken:
    ``Executor.map`` submits every item at once, and decoded images then pile up in memory on a large folder."""
    items = iter(items)
    window = deque(pool.submit(fn, x) for x in itertools.islice(items, ahead))
    while window:
        done = window.popleft()
        for x in itertools.islice(items, 1):
            window.append(pool.submit(fn, x))
        yield done.result()


def _decode(path: Path, predictor, invert: str):
    from runtime.predict import to_gray_image
    from runtime.preprocess import to_source

    try:
        return to_source(to_gray_image(path, channels=predictor.spec.channels), predictor.spec, invert), None
    except ToolkitError as exc:
        return None, str(exc)


@cli_errors
def predict_cmd(
    artifacts_dir: Annotated[Path, typer.Argument(help="Directory with manifest.json.")],
    paths: Annotated[list[str], typer.Argument(help="Image files, directories or globs (PNG, JPEG, WebP, .npy, ...).")],
    k: Annotated[int, Opt("-k", "--top-k", help="Classes to show per image.")] = 1,
    json_out: Annotated[Optional[Path], Opt("--json", help="Write every prediction (and every failure) here.")] = None,
    backend: Annotated[str, Opt(help="auto (fastest that passes parity here), or a backend: onnxruntime, openvino, "
                                     "torch, tensorrt, tensorrt_rtx, litert, ncnn, executorch, aoti.")] = "auto",
    precision: Annotated[str, Opt(help="With an explicit backend: fp32, fp16, bf16, int8 or int8-cpu.")] = "fp32",
    invert: Annotated[str, Opt(help="Invert images to light-on-dark: auto (judged from the border), yes or no.")] = "auto",
    batch_size: Annotated[int, Opt(help="Images per inference call.")] = 64,
    threads: Annotated[int, Opt(help="Backend threads (0: library default).")] = 0,
    device: Annotated[str, Opt(help="cpu, or vulkan: ncnn's compute shaders on a Vulkan GPU.")] = "cpu",
    gpu_index: Annotated[int, Opt(help="Which Vulkan device, with --device vulkan.")] = 0,
) -> None:
    """Classify image files with the exported model; prints a table and exits 1 if any file failed."""
    from resnet_edge.atomic import atomic_write_text
    from resnet_edge.images import to_input
    from runtime.predict import load, top_k
    from runtime.preprocess import check_invert

    t_start = time.perf_counter()
    check_invert(invert)
    if not 1 <= batch_size <= 4096:
        raise InvalidInput("--batch-size must be in 1..4096.")
    files, problems = expand(paths)
    failures = {p: why for p, why in problems}
    for why in failures.values():
        err.print(f"[red]error:[/] {escape(why)}", highlight=False)
    if not files:
        raise InvalidInput("Nothing to classify: no image files among the paths given.")
    predictor = load(artifacts_dir, backend, precision, threads=threads, max_batch=batch_size, device=device,
                     gpu_index=gpu_index)
    if not 1 <= k <= predictor.spec.num_classes:
        raise InvalidInput(f"-k must be in 1..{predictor.spec.num_classes}.")
    results: list[tuple[Path, list]] = []
    first_result_s = None
    with predictor, ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool, \
            Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=err, transient=True, disable=len(files) < 2) as bar:
        task = bar.add_task("predict", total=len(files))
        decoded = decode_ahead(pool, lambda p: _decode(p, predictor, invert), files, AHEAD_BATCHES * batch_size)
        batch, names = [], []

        def flush() -> None:
            nonlocal first_result_s
            if batch:
                x = to_input(np.stack(batch), predictor.spec.mean, predictor.spec.std, predictor.spec.image_size)
                for name, top in zip(names, top_k(predictor.logits(x), k, predictor.class_names)):
                    results.append((name, top))
                first_result_s = first_result_s or time.perf_counter() - t_start
                bar.advance(task, len(batch))
                batch.clear()
                names.clear()

        for path, (img, why) in zip(files, decoded):
            if why is not None:
                failures[str(path)] = why
                err.print(f"[red]error:[/] {escape(why)}", highlight=False)
                bar.advance(task)
                continue
            batch.append(img)
            names.append(path)
            if len(batch) == batch_size:
                flush()
        flush()
    seconds = time.perf_counter() - t_start
    _print_table(results, k)
    n = len(results)
    rate = f", {n / seconds:,.0f} images/s" if n > 1 else ""
    first = f"; first result after {first_result_s:.2f} s" if first_result_s is not None else ""
    console.print(f"{n:,} classified with {escape(predictor.describe())} in {seconds:.2f} s{rate}{first}"
                  + (f"; [red]{len(failures)} failed[/]" if failures else ""), highlight=False)
    if json_out:
        doc = {"artifacts": str(artifacts_dir), "variant": predictor.describe(), "k": k, "invert": invert,
               "seconds": seconds, "first_result_seconds": first_result_s,
               "predictions": [{"file": str(p), "top": [t._asdict() for t in top]} for p, top in results],
               "failures": [{"path": p, "error": why} for p, why in failures.items()]}
        atomic_write_text(json_out, json.dumps(doc, indent=2))
    if failures:
        raise typer.Exit(1)


def _print_table(results, k: int) -> None:
    if not results:
        return
    table = Table(title=None if len(results) <= TABLE_ROWS else f"the first {TABLE_ROWS} of {len(results):,} images")
    table.add_column("file", overflow="fold")
    for i in range(k):
        table.add_column(f"top {i + 1}" if k > 1 else "label")
        table.add_column("p", justify="right")
    for path, top in results[:TABLE_ROWS]:
        cells = [escape(str(path))]
        for p in top:
            cells += [escape(p.label), f"{p.probability:.3f}"]
        table.add_row(*cells)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
