"""The training loop: the LR schedule, epochs, validation, checkpoints. Mixed precision is ``train.amp``,
DistributedDataParallel ``train.distributed``, resume and ``--init`` ``train.resume``; one ``Run`` holds the state
they share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from resnet_edge.errors import InvalidInput
from train import distributed
from train.amp import amp_name, choose_amp
from train.checkpoint import Checkpoint, EpochResult, Metrics
from train.config import TrainConfig, lr_at
from train.data import Augment, FashionMNIST, FolderData, iterate_batches, load_fashion_mnist
from train.distill import Distillation
from train.distributed import Ranks, resolve_device
from train.evaluate import predict
from train.model import ModelConfig, build_model
from train.resume import Resumed, initialise, restore

__all__ = ["EpochResult", "TrainResult", "lr_at", "resolve_device", "train"]


@dataclass
class TrainResult:
    out_dir: Path
    best_acc: float = 0.0  # validation accuracy of best.pt (without a validation split: nan, and the last epoch)
    best_epoch: int = 0
    test_acc: float | None = None  # best.pt on the test split, read once after training
    history: list[EpochResult] = field(default_factory=list)
    train_seconds: float = 0.0
    amp: str = "none"
    device: str = "cpu"
    world_size: int = 1
    model: nn.Module | None = None  # the trained network (this rank's replica under DDP)


@dataclass
class Run:
    """Everything one training run holds: its settings, data, model and optimiser, and its results so far."""

    cfg: TrainConfig
    out_dir: Path
    ranks: Ranks
    console: Console
    data: Any  # FashionMNIST | FolderData, with its validation split carved
    mcfg: ModelConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    result: TrainResult
    resumed: Resumed | None = None
    amp_dtype: torch.dtype | None = None
    net: nn.Module | None = None  # the model, wrapped in DDP under torchrun
    distill: Distillation | None = None
    scaler: Any = None  # torch.amp.GradScaler: active for fp16 autocast only
    train_start: float = 0.0

    @property
    def device(self) -> torch.device:
        return self.ranks.device

    @property
    def per_rank(self) -> int:
        return max(1, self.cfg.batch_size // self.ranks.world)

    @property
    def train_split(self):
        return self.data.train.subset(self.cfg.limit_train)  # a view: the first N images, no copy

    @property
    def val_split(self):
        return self.data.validation.subset(self.cfg.limit_test) if self.data.validation is not None else None

    @property
    def steps_per_epoch(self) -> int:
        return (len(self.train_split) // self.ranks.world) // self.per_rank

    def eval_logits(self, split, amp_dtype: torch.dtype | None = None, model: nn.Module | None = None) -> torch.Tensor:
        m = self.mcfg
        return predict(model or self.model, split, mean=m.mean, std=m.std, image_size=m.image_size, device=self.device,
                       amp_dtype=amp_dtype, channels_last=self.cfg.channels_last, batch_size=self.cfg.eval_batch_size)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}  {task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(), console=console, disable=not enabled, transient=False,
    )


def train(
    cfg: TrainConfig,
    out_dir: Path | str = "checkpoints",
    *,
    data_dir: Path | str | None = None,
    data: FashionMNIST | FolderData | None = None,
    resume: bool = False,
    init: Path | str | None = None,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
    console: Console | None = None,
    distill: Distillation | None = None,
) -> TrainResult:
    """Train ``cfg`` on Fashion-MNIST (or ``data``: an image folder), validating every epoch on a split carved
    from the training images (``cfg.val_size``), and reading the test split once at the end to report best.pt.

    Writes ``out_dir/last.pt`` every epoch and ``out_dir/best.pt`` on a validation improvement (every epoch
    without a validation split, so that it is the last). With ``resume``, continues from ``out_dir/last.pt``.
    Under ``torchrun`` it trains with DistributedDataParallel (gloo on CPU, nccl on CUDA) and rank 0 writes.
    """
    cfg = cfg.validate()
    console = console or Console(stderr=True)
    with distributed.process_group(cfg.device, cfg.threads) as ranks:
        run = _prepare(cfg, Path(out_dir), ranks, console, data or load_fashion_mnist(data_dir), resume,
                       Path(init) if init else None, distill)
        return _loop(run, on_epoch_end)


def _prepare(cfg: TrainConfig, out_dir: Path, ranks: Ranks, console: Console, data, resume: bool,
             init: Path | None, distill: Distillation | None = None) -> Run:
    """The run's model, optimiser and precision, restored from ``last.pt`` with ``resume``."""
    if data.split is None:  # Fashion-MNIST: carve the validation split (a folder's comes carved, by file)
        data = data.with_validation(cfg.val_size, cfg.seed)
    mean, std = data.stats()
    mcfg = ModelConfig(depth=cfg.depth, stem=cfg.stem, image_size=cfg.image_size, in_channels=data.channels,
                       class_names=tuple(data.class_names), num_classes=len(data.class_names), mean=mean, std=std,
                       source_size=data.source_size, source_resize=data.source_resize)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg) if distill is None else distill.model
    if distill is not None:
        mcfg = distill.config
        distill.teacher.to(ranks.device).eval()
    if init is not None and not resume:
        mcfg = initialise(model, mcfg, init, console if ranks.main else None)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # no decay on BN and biases
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=True)
    result = TrainResult(out_dir=out_dir, device=str(ranks.device), world_size=ranks.world)
    run = Run(cfg, out_dir, ranks, console, data, mcfg, model, optimizer, result, distill=distill)
    run.resumed = restore(out_dir, model, optimizer, cfg, result) if resume else None
    model.to(run.device)
    if cfg.channels_last:
        run.model = model = model.to(memory_format=torch.channels_last)
    for state in optimizer.state.values():  # optimizer state follows the model's device
        for k, v in state.items():
            if torch.is_tensor(v):
                state[k] = v.to(run.device)
    # A resumed run keeps the precision it started with: `--amp auto` is never re-probed.
    run.amp_dtype = run.resumed.amp_dtype if run.resumed else choose_amp(cfg, run.device, model, run.per_rank)
    if run.amp_dtype == torch.float16 and run.device.type != "cuda":
        raise InvalidInput("This run trains with fp16 autocast, which needs CUDA; resume it on a CUDA device.")
    result.amp = amp_name(run.amp_dtype)
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp_dtype == torch.float16)
    run.net = distributed.wrap(model)
    if run.steps_per_epoch == 0:
        raise InvalidInput(f"--batch-size {cfg.batch_size} is larger than the {len(run.train_split)} training images.")
    return run


def _loop(run: Run, on_epoch_end: Callable[[EpochResult], None] | None) -> TrainResult:
    cfg, ranks, result = run.cfg, run.ranks, run.result
    val_split = run.val_split
    if ranks.main:
        held = f"best epoch chosen on {len(val_split)} validation images" if val_split else "keeping the last epoch"
        run.console.print(f"training ResNet-{cfg.depth} ({cfg.stem} stem, {cfg.image_size}px) on "
                          f"{len(run.train_split)} images ({held}), {run.device} x{ranks.world}, amp={result.amp}, "
                          f"batch {cfg.batch_size}, {cfg.epochs} epochs")
    run.train_start = time.perf_counter() - result.train_seconds
    start_epoch = run.resumed.start_epoch if run.resumed else 1
    if run.resumed and run.resumed.rng_state is not None:
        torch.set_rng_state(run.resumed.rng_state)
    if run.resumed and run.resumed.cuda_rng_state is not None and run.device.type == "cuda":
        torch.cuda.set_rng_state(run.resumed.cuda_rng_state, run.device)
    steps = run.steps_per_epoch
    with _progress(run.console, ranks.main) as bar:
        task = bar.add_task("train", total=steps * cfg.epochs, completed=(start_epoch - 1) * steps, loss=0.0, acc=0.0,
                            ips=0.0)
        for epoch in range(start_epoch, cfg.epochs + 1):
            bar.update(task, description=f"epoch {epoch}/{cfg.epochs}")
            t0 = time.perf_counter()
            sums, seen = _epoch(run, epoch, lambda **kw: bar.update(task, advance=1, **kw))
            distributed.all_reduce(sums)
            seconds = time.perf_counter() - t0
            ep = _end_epoch(run, epoch, sums, seen / seconds, seconds)
            distributed.barrier()
            if ranks.main:
                run.console.print(f"epoch {epoch:>2}/{cfg.epochs}  train loss {ep.train_loss:.4f} acc "
                                  f"{ep.train_acc:.2%}  val loss {ep.val_loss:.4f} acc {ep.val_acc:.2%}  "
                                  f"{ep.img_per_s:.0f} img/s  {result.train_seconds:.0f}s")
            if on_epoch_end is not None:
                on_epoch_end(ep)
    if ranks.main:
        _report_test(run)
    result.model = run.model
    return result


def _epoch(run: Run, epoch: int, advance: Callable[..., None]) -> tuple[torch.Tensor, int]:
    """One pass over this rank's share of the training images; (loss*n, correct, n) on the device, images seen."""
    cfg, ranks, device, amp = run.cfg, run.ranks, run.device, run.amp_dtype
    m = run.mcfg
    scaler = run.scaler
    run.net.train()
    t0, seen = time.perf_counter(), 0
    total = run.steps_per_epoch * cfg.epochs
    # loss*n, correct, n: kept on the training device, since NCCL all-reduces only device tensors
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    batches = iterate_batches(run.train_split, run.per_rank, mean=m.mean, std=m.std, image_size=cfg.image_size,
                              shuffle=True, seed=cfg.seed * 100_003 + epoch,
                              augment=Augment(cfg.crop_padding, cfg.hflip, cfg.erase_prob), device=device,
                              rank=ranks.rank, world_size=ranks.world, drop_last=True)
    for i, (x, y) in enumerate(batches):
        for g in run.optimizer.param_groups:
            g["lr"] = lr_at((epoch - 1) * run.steps_per_epoch + i, total, cfg)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = run.net(x)
            if run.distill is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            else:
                loss = run.distill.loss(logits.float(), x, y, cfg.label_smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(run.optimizer)
        scaler.update()
        n = y.shape[0]
        seen += n * ranks.world
        sums += torch.stack([loss.detach().double() * n, (logits.argmax(1) == y).sum().double(),
                             torch.tensor(float(n), dtype=torch.float64, device=device)])
        if ranks.main:
            avg = (sums[:2] / sums[2]).tolist()
            advance(loss=avg[0], acc=avg[1], ips=seen / (time.perf_counter() - t0))
    return sums, seen


def _end_epoch(run: Run, epoch: int, sums: torch.Tensor, ips: float, seconds: float) -> EpochResult:
    """Validate, record the epoch, and write last.pt (and best.pt on an improvement)."""
    cfg, result, val_split, main = run.cfg, run.result, run.val_split, run.ranks.main
    val_loss = val_acc = float("nan")
    if main and val_split is not None:
        logits = run.eval_logits(val_split, run.amp_dtype)
        val_loss = float(F.cross_entropy(logits, val_split.labels))
        val_acc = float((logits.argmax(1) == val_split.labels).float().mean())
    ep = EpochResult(epoch, sums[0].item() / sums[2].item(), sums[1].item() / sums[2].item(),
                     val_loss, val_acc, ips, seconds)
    result.history.append(ep)
    result.train_seconds = time.perf_counter() - run.train_start
    # Without a validation split every epoch "improves": best.pt is the last epoch.
    improved = main and (val_split is None or result.best_epoch == 0 or val_acc > result.best_acc)
    if improved:
        result.best_acc, result.best_epoch = val_acc, epoch
    if main:
        metrics = Metrics(val_acc=val_acc, val_loss=val_loss, train_loss=ep.train_loss, train_acc=ep.train_acc,
                          train_img_per_s=ips, best_acc=result.best_acc, best_epoch=result.best_epoch,
                          train_seconds=result.train_seconds, world_size=result.world_size, amp=result.amp,
                          device=result.device)
        device = run.device
        ckpt = Checkpoint.of(run.model, run.mcfg, optimizer=run.optimizer, epoch=epoch, metrics=metrics,
                             scheduler={"name": cfg.schedule, "epochs_done": epoch, "lr_function": "train.engine.lr_at"},
                             train_config=cfg, data_sha256=run.data.sha256, split=run.data.split,
                             history=tuple(result.history), compression=run.distill.record if run.distill else None,
                             cuda_rng_state=torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
        ckpt.write(run.out_dir / "last.pt")
        if improved:
            ckpt.write(run.out_dir / "best.pt")
    return ep


def _report_test(run: Run) -> None:
    """best.pt on the test split, once: the accuracy reported for what is exported, written into best.pt."""
    best = run.out_dir / "best.pt"
    test_split = run.data.test.subset(run.cfg.limit_test)
    ckpt = Checkpoint.read(best)
    logits = run.eval_logits(test_split, model=ckpt.model(best).to(run.device))
    run.result.test_acc = float((logits.argmax(1) == test_split.labels).float().mean())
    metrics = replace(ckpt.metrics, test_acc=run.result.test_acc, test_images=len(test_split),
                      test_loss=float(F.cross_entropy(logits, test_split.labels)))
    replace(ckpt, metrics=metrics).write(best)
