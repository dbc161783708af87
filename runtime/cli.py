"""`resnet-edge parity`, and the helpers every runtime command parses its options with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from resnet_edge.cli_util import cli_errors, make_console
from resnet_edge.errors import InvalidInput

console = make_console()
Opt = typer.Option


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InvalidInput(f"{what} must be comma-separated integers, not '{text}'.") from None
    if not values or min(values) < 1:
        raise InvalidInput(f"{what} must be positive, not '{text}'.")
    return values


def _seconds(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s)?\s*", text)
    if not m:
        raise InvalidInput(f"'{text}' is not a duration; use e.g. 2s or 500ms.")
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def _progress():
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                    console=make_console(stderr=True), transient=True)


@cli_errors
def parity_cmd(
    artifacts_dir: Annotated[Path, typer.Argument(help="Directory with manifest.json.")] = Path("artifacts"),
    backend: Annotated[str, Opt(help="Comma-separated backends, or all.")] = "all",
    limit: Annotated[Optional[int], Opt(help="Use the first N test images (default all 10,000).")] = None,
    random: Annotated[int, Opt(help="Random inputs compared as well.")] = 256,
    precision: Annotated[str, Opt(help="Comma-separated precisions (fp32,fp16,bf16,int8), or all.")] = "all",
    device: Annotated[str, Opt(help="cpu; cuda for the torch and onnxruntime backends; vulkan for ncnn's compute "
                                    "shaders on a Vulkan GPU.")] = "cpu",
    gpu_index: Annotated[int, Opt(help="Which Vulkan device, with --device vulkan.")] = 0,
    json_out: Annotated[Optional[Path], Opt("--json", help="Write the report as JSON here.")] = None,
    data_dir: Annotated[Optional[Path], Opt(help="Directory with the Fashion-MNIST IDX files.")] = None,
    reference: Annotated[str, Opt(help="golden: the golden set in ARTIFACTS_DIR (no torch needed); pytorch: "
                                       "the artifacts' reference program over the test set; auto: pytorch where "
                                       "torch and the data are here, else golden; or a file "
                                       "--save-outputs wrote (on any machine).")] = "auto",
    save_outputs: Annotated[Optional[Path], Opt(help="Save the reference run (images, labels, logits) here, to "
                                                     "compare with on another machine (--reference FILE).")] = None,
) -> None:
    """Compare every artifact on every available backend with the PyTorch FP32 reference."""
    from resnet_edge.atomic import atomic_write_text
    from runtime.formats import parse_precisions
    from runtime.parity import choose_reference, parity_json, parity_table, run_parity
    from runtime.spec import load_artifacts
    from runtime.variants import parse_backends, plan, runtime_defaults
    from runtime.vulkan import check_device

    arts = load_artifacts(artifacts_dir)
    wanted = set(parse_precisions(precision)) or None
    check_device(device)
    with _progress() as bar:
        task = bar.add_task("reference run")
        ref = choose_reference(arts, use=reference, limit=limit, data_dir=data_dir)
        variants, skipped = plan(arts, parse_backends(backend), device=device, gpu_index=gpu_index,
                                 precisions=wanted)
        variants += runtime_defaults(variants)  # beside the pinned settings: what the runtime's defaults give here
        if save_outputs:
            ref.run.save(save_outputs)
        report = run_parity(arts, variants, ref, n_random=random,
                            progress=lambda label: bar.update(task, description=f"parity: {label}"))
    report.skipped = skipped
    console.print(parity_table(report))
    if device == "vulkan":
        from runtime.vulkan import device as vulkan_device

        console.print(escape(vulkan_device(gpu_index).where()), highlight=False)
    for line in skipped:
        console.print(f"[yellow]skipped:[/] {escape(line)}", highlight=False)
    if json_out:
        atomic_write_text(json_out, parity_json(report))
    if not report.passed:
        failed = ", ".join(r.variant for r in report.rows if not r.passed)
        console.print(f"[bold red]parity failed:[/] {failed}")
        raise typer.Exit(1)
    console.print(f"[bold green]all {len(report.rows)} variants within tolerance[/]")


def register(app: typer.Typer) -> None:
    app.command("parity")(parity_cmd)
