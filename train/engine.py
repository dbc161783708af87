"""The training loop: presets, LR schedule, AMP choice, DDP, checkpoints and resume."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from resnet_edge.atomic import atomic_path
from resnet_edge.errors import CheckpointError, InvalidInput
from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.config import Amp, Schedule, TrainConfig
from train.data import Augment, FashionMNIST, FolderData, iterate_batches, load_fashion_mnist
from train.evaluate import predict
from train.model import ModelConfig, build_model


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float  # on the validation split carved from the training images (nan without one)
    val_acc: float
    img_per_s: float
    seconds: float


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidInput(f"--device '{name}' is not a device; use auto, cpu or cuda.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("--device cuda was asked for, but PyTorch sees no CUDA GPU here.")
    return device


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` of ``total``: one-cycle (warm-up, cosine down) or cosine."""
    t = step / max(total - 1, 1)
    warm = cfg.warmup_frac if cfg.schedule == Schedule.ONECYCLE.value else min(cfg.warmup_frac, 0.02)
    if t < warm:
        start = cfg.lr / 25
        return start + (cfg.lr - start) * t / warm
    progress = (t - warm) / (1 - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress)) + 1e-6


def _step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return time.perf_counter() - t0


def _bf16_faster_on_cpu(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Time fp32 and bf16 training steps in blocks (switching every step would defeat oneDNN's
    cached weight layouts); the minimum of each block resists load noise."""
    times: dict[torch.dtype | None, list[float]] = {None: [], torch.bfloat16: []}
    for _ in range(2):
        for dtype in (None, torch.bfloat16):
            times[dtype] += [_step_time(model, x, y, dtype) for _ in range(3)][1:]
    return min(times[torch.bfloat16]) < 0.93 * min(times[None])


def choose_amp(cfg: TrainConfig, device: torch.device, model: nn.Module, batch: int) -> torch.dtype | None:
    """Resolve ``--amp``. On CPU, ``auto`` uses bf16 only if a short probe measures it faster."""
    if cfg.amp == Amp.NONE.value:
        return None
    if cfg.amp == Amp.FP16.value:
        if device.type != "cuda":
            raise InvalidInput("--amp fp16 needs CUDA; use bf16 or none on CPU.")
        return torch.float16
    if cfg.amp == Amp.BF16.value:
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    probe = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg_channels(model), cfg.image_size, cfg.image_size, generator=gen)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.fc.out_features, (x.shape[0],), generator=gen)  # the model's own class count
    return torch.bfloat16 if _bf16_faster_on_cpu(probe, x, y) else None


def cfg_channels(model: nn.Module) -> int:
    return model.conv1.in_channels  # type: ignore[union-attr]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)  # no decay on BN and biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
) -> TrainResult:
    """Train ``cfg`` on Fashion-MNIST (or ``data``: an image folder), validating every epoch on a split carved
    from the training images (``cfg.val_size``), and reading the test split once at the end to report best.pt.

    Writes ``out_dir/last.pt`` every epoch and ``out_dir/best.pt`` on a validation improvement (every epoch
    without a validation split, so that it is the last). With
    ``resume``, continues from ``out_dir/last.pt``. Under ``torchrun`` it trains with
    DistributedDataParallel (gloo on CPU, nccl on CUDA) and rank 0 writes.
    """
    cfg = cfg.validate()
    out_dir = Path(out_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    console = console or Console(stderr=True)
    device = resolve_device(cfg.device)
    if world > 1 or "LOCAL_RANK" in os.environ:
        if device.type == "cuda":  # each rank owns its GPU before the first collective touches it
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world))
    else:
        torch.backends.cudnn.benchmark = True
    try:
        return _train(cfg, out_dir, data_dir, data, resume, on_epoch_end, console, device, rank, world,
                      Path(init) if init else None)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _initialise(model: nn.Module, mcfg: ModelConfig, init: Path, console: Console | None) -> ModelConfig:
    """Start from ``init``'s weights (an imported or trained checkpoint of the same architecture). A different
    class count keeps the fresh head, and says so; a different input channel count or depth is refused."""
    from train.checkpoint import load_model

    source = load_model(init)
    src = source.config
    if (src.depth, src.in_channels, src.stem) != (mcfg.depth, mcfg.in_channels, mcfg.stem):
        raise InvalidInput(f"--init {init} is a ResNet-{src.depth} ({src.stem} stem) for {src.in_channels}-channel "
                           f"images, but this run trains a ResNet-{mcfg.depth} ({mcfg.stem} stem) on "
                           f"{mcfg.in_channels}-channel images; pass --arch/--stem to match, or convert the data.")
    state = source.state_dict()
    if src.num_classes != mcfg.num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if console:
            console.print(f"--init {init}: its {src.num_classes}-class head is replaced by a new {mcfg.num_classes}-"
                          "class head (fc), initialised afresh; every other layer starts from the checkpoint")
    elif console:
        console.print(f"--init {init}: every layer, the head included, starts from the checkpoint")
    model.load_state_dict(state, strict=False)
    return mcfg


def _train(cfg, out_dir, data_dir, data, resume, on_epoch_end, console, device, rank, world, init=None) -> TrainResult:
    data = data or load_fashion_mnist(data_dir)
    if data.split is None:  # Fashion-MNIST: carve the validation split (a folder's comes carved, by file)
        data = data.with_validation(cfg.val_size, cfg.seed)
    train_split, test_split = data.train.subset(cfg.limit_train), data.test.subset(cfg.limit_test)
    val_split = data.validation.subset(cfg.limit_test) if data.validation is not None else None
    mean, std = data.stats()
    mcfg = ModelConfig(depth=cfg.depth, stem=cfg.stem, image_size=cfg.image_size, in_channels=data.channels,
                       class_names=tuple(data.class_names), num_classes=len(data.class_names), mean=mean, std=std,
                       source_size=data.source_size, source_resize=data.source_resize)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    if init is not None and not resume:
        mcfg = _initialise(model, mcfg, init, console if rank == 0 else None)
    optimizer = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                momentum=cfg.momentum, nesterov=True)
    result = TrainResult(out_dir=out_dir, device=str(device), world_size=world)
    resumed = _restore(out_dir, model, optimizer, cfg, result) if resume else None
    start_epoch = resumed.start_epoch if resumed else 1
    model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    for state in optimizer.state.values():  # optimizer state follows the model's device
        for k, v in state.items():
            if torch.is_tensor(v):
                state[k] = v.to(device)
    # A resumed run keeps the precision it started with: `--amp auto` is never re-probed.
    amp_dtype = resumed.amp_dtype if resumed else choose_amp(cfg, device, model, cfg.batch_size // world)
    if amp_dtype == torch.float16 and device.type != "cuda":
        raise InvalidInput("This run trains with fp16 autocast, which needs CUDA; resume it on a CUDA device.")
    result.amp = str(amp_dtype).replace("torch.", "") if amp_dtype else "none"
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    net = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    per_rank = max(1, cfg.batch_size // world)
    steps_per_epoch = (len(train_split) // world) // per_rank
    if steps_per_epoch == 0:
        raise InvalidInput(f"--batch-size {cfg.batch_size} is larger than the {len(train_split)} training images.")
    total = steps_per_epoch * cfg.epochs
    augment = Augment(cfg.crop_padding, cfg.hflip, cfg.erase_prob)
    if rank == 0:
        held = f"best epoch chosen on {len(val_split)} validation images" if val_split else "keeping the last epoch"
        console.print(f"training ResNet-{cfg.depth} ({cfg.stem} stem, {cfg.image_size}px) on {len(train_split)} "
                      f"images ({held}), {device} x{world}, amp={result.amp}, batch {cfg.batch_size}, "
                      f"{cfg.epochs} epochs")
    train_start = time.perf_counter() - result.train_seconds
    if resumed and resumed.rng_state is not None:
        torch.set_rng_state(resumed.rng_state)
    if resumed and resumed.cuda_rng_state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(resumed.cuda_rng_state, device)
    with _progress(console, rank == 0) as bar:
        task = bar.add_task("train", total=total, completed=(start_epoch - 1) * steps_per_epoch,
                            loss=0.0, acc=0.0, ips=0.0)
        for epoch in range(start_epoch, cfg.epochs + 1):
            bar.update(task, description=f"epoch {epoch}/{cfg.epochs}")
            net.train()
            t0, seen = time.perf_counter(), 0
            # loss*n, correct, n: kept on the training device, since NCCL all-reduces only device tensors
            sums = torch.zeros(3, dtype=torch.float64, device=device)
            batches = iterate_batches(train_split, per_rank, mean=mean, std=std, image_size=cfg.image_size,
                                      shuffle=True, seed=cfg.seed * 100_003 + epoch, augment=augment,
                                      device=device, rank=rank, world_size=world, drop_last=True)
            for i, (x, y) in enumerate(batches):
                step = (epoch - 1) * steps_per_epoch + i
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(step, total, cfg)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = net(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                n = y.shape[0]
                seen += n * world
                sums += torch.stack([loss.detach().double() * n, (logits.argmax(1) == y).sum().double(),
                                     torch.tensor(float(n), dtype=torch.float64, device=device)])
                if rank == 0:
                    avg = (sums[:2] / sums[2]).tolist()
                    bar.update(task, advance=1, loss=avg[0], acc=avg[1], ips=seen / (time.perf_counter() - t0))
            if dist.is_initialized():
                dist.all_reduce(sums)
            epoch_seconds = time.perf_counter() - t0
            ep = _end_epoch(cfg, epoch, model, optimizer, mcfg, data, val_split, device, amp_dtype,
                            sums, seen / epoch_seconds, epoch_seconds, result, train_start, rank, out_dir)
            if dist.is_initialized():
                dist.barrier()
            if rank == 0:
                console.print(f"epoch {epoch:>2}/{cfg.epochs}  train loss {ep.train_loss:.4f} acc {ep.train_acc:.2%}  "
                              f"val loss {ep.val_loss:.4f} acc {ep.val_acc:.2%}  {ep.img_per_s:.0f} img/s  "
                              f"{result.train_seconds:.0f}s")
            if on_epoch_end is not None:
                on_epoch_end(ep)
    if rank == 0:
        _report_test(out_dir / "best.pt", mcfg, test_split, device, cfg, result)
    result.model = model
    return result


def _report_test(best: Path, mcfg: ModelConfig, test_split, device, cfg: TrainConfig, result: TrainResult) -> None:
    """best.pt on the test split, once: the accuracy reported for what is exported, written into best.pt."""
    ckpt = load_checkpoint(best)
    logits = predict(model_from_checkpoint(ckpt, best).to(device), test_split, mean=mcfg.mean, std=mcfg.std,
                     image_size=mcfg.image_size, device=device, channels_last=cfg.channels_last,
                     batch_size=cfg.eval_batch_size)
    result.test_acc = float((logits.argmax(1) == test_split.labels).float().mean())
    ckpt["metrics"].update(test_acc=result.test_acc, test_loss=float(F.cross_entropy(logits, test_split.labels)),
                           test_images=len(test_split))
    with atomic_path(best) as tmp:
        torch.save(ckpt, tmp)


def _end_epoch(cfg, epoch, model, optimizer, mcfg, data, val_split, device, amp_dtype, sums, ips,
               seconds, result: TrainResult, train_start, rank, out_dir) -> EpochResult:
    val_loss = val_acc = float("nan")
    if rank == 0 and val_split is not None:
        logits = predict(model, val_split, mean=mcfg.mean, std=mcfg.std, image_size=mcfg.image_size,
                         device=device, amp_dtype=amp_dtype, channels_last=cfg.channels_last,
                         batch_size=cfg.eval_batch_size)
        val_loss = float(F.cross_entropy(logits, val_split.labels))
        val_acc = float((logits.argmax(1) == val_split.labels).float().mean())
    ep = EpochResult(epoch, sums[0].item() / sums[2].item(), sums[1].item() / sums[2].item(),
                     val_loss, val_acc, ips, seconds)
    result.history.append(ep)
    result.train_seconds = time.perf_counter() - train_start
    # Without a validation split every epoch "improves": best.pt is the last epoch.
    improved = rank == 0 and (val_split is None or result.best_epoch == 0 or val_acc > result.best_acc)
    if improved:
        result.best_acc, result.best_epoch = val_acc, epoch
    if rank == 0:
        metrics = {"val_acc": val_acc, "val_loss": val_loss, "train_loss": ep.train_loss,
                   "train_acc": ep.train_acc, "train_img_per_s": ips, "best_acc": result.best_acc,
                   "best_epoch": result.best_epoch, "train_seconds": result.train_seconds,
                   "world_size": result.world_size, "amp": result.amp, "device": result.device}
        kwargs = dict(model=model, config=mcfg, epoch=epoch, metrics=metrics, optimizer=optimizer,
                      scheduler={"name": cfg.schedule, "epochs_done": epoch, "lr_function": "train.engine.lr_at"},
                      train_config=cfg.to_dict(),
                      data_sha256=data.sha256,
                      extra={"split": data.split, "history": [e.__dict__ for e in result.history],
                             "cuda_rng_state": torch.cuda.get_rng_state(device) if device.type == "cuda" else None})
        save_checkpoint(out_dir / "last.pt", **kwargs)
        if improved:
            save_checkpoint(out_dir / "best.pt", **kwargs)
    return ep


AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class _Resumed:
    start_epoch: int
    amp_dtype: torch.dtype | None
    rng_state: torch.Tensor | None
    cuda_rng_state: torch.Tensor | None


def _restore(out_dir: Path, model, optimizer, cfg: TrainConfig, result: TrainResult) -> _Resumed:
    """Continue the saved run exactly: same settings, same schedule, same precision, same RNG state."""
    path = out_dir / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"--resume needs {path}, which does not exist.")
    ckpt = load_checkpoint(path)
    saved = TrainConfig.from_dict(ckpt.get("train_config", {}))
    if saved.epochs != cfg.epochs:
        raise InvalidInput(f"--resume: {path} follows a {saved.epochs}-epoch learning-rate schedule; resume with "
                           f"--epochs {saved.epochs} (another length would jump the learning rate mid-run).")
    if replace(saved, device=cfg.device, threads=cfg.threads) != cfg:
        changed = sorted(k for k, v in cfg.to_dict().items() if saved.to_dict().get(k) != v
                         and k not in ("device", "threads"))
        raise InvalidInput(f"--resume: {path} was trained with other settings ({', '.join(changed)}); resume with "
                           "the same options.")
    if ckpt["epoch"] >= cfg.epochs:
        raise InvalidInput(f"--resume: {path} already finished epoch {ckpt['epoch']} of {cfg.epochs}, the end of its "
                           "schedule; start a new run in another --out directory.")
    model.load_state_dict(model_from_checkpoint(ckpt, path).state_dict())
    if ckpt.get("optimizer"):
        optimizer.load_state_dict(ckpt["optimizer"])
    m = ckpt["metrics"]
    result.best_acc, result.best_epoch = m.get("best_acc", 0.0), m.get("best_epoch", 0)
    result.train_seconds = m.get("train_seconds", 0.0)
    try:
        result.history = [EpochResult(**e) for e in ckpt.get("history", [])]
    except TypeError:
        raise CheckpointError(f"--resume: {path} was written by an older resnet-edge, which chose its epoch on the "
                              "test set; start a new run in another --out directory.") from None
    amp = str(m.get("amp", "none"))
    if amp not in AMP_DTYPES:
        raise CheckpointError(f"{path} records an unknown autocast precision '{amp}'.")
    return _Resumed(ckpt["epoch"] + 1, AMP_DTYPES[amp], ckpt.get("rng_state"), ckpt.get("cuda_rng_state"))
