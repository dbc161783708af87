"""``resnet-edge compress``: a checkpoint in, a smaller checkpoint out, as training is a checkpoint out.

Structured channel pruning with Torch-Pruning's dependency graph (which keeps the residual groups consistent: a
stage's blocks share their output width, the stem shares layer1's), the classifier's outputs untouched, channels
rounded to a multiple of 8; optionally a shallower ResNet-10 student (one basic block a stage, started from the
teacher's first block of each stage); then fine-tuning by knowledge distillation from the unpruned teacher on the
teacher's own training split, the best epoch chosen on the teacher's validation split (never the test set).

The result is an ordinary checkpoint: the widths and depth are fields of the model config, the weights a plain
``state_dict`` under torchvision's names that ``train.model`` rebuilds, and ``compression`` records the teacher's
sha256 and accuracy, the ratio, MACs and parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from resnet_edge.atomic import sha256_file
from resnet_edge.compression import Compression
from resnet_edge.errors import InvalidInput, MissingDependency
from train.checkpoint import Checkpoint
from train.config import TrainConfig
from train.model import STAGES, ResNet, build_model

ROUND_TO = 8
MIN_CHANNELS = 8
QAT_MODES = ("auto", "on", "off")
# The int8 row of runtime.tolerances.TOLERANCES (train sits beside the runtime, not above it): what export's gate
# will hold the INT8 file to, and what the simulated check holds the student to before export.
INT8_MIN_TOP1, INT8_MAX_DROP_PT = 0.99, 0.5


@dataclass(frozen=True)
class CompressConfig:
    ratio: float = 0.5  # the share of channels pruned in every prunable group (0: none, depth only)
    depth: int | None = None  # 10: a ResNet-10 student; None: the teacher's depth
    epochs: int = 4
    lr: float = 0.05  # the fine-tuning's peak learning rate (the teacher's one-cycle schedule, lower)
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the distillation term; 0: fine-tuning on hard labels alone (the ablation)
    global_pruning: bool = False  # uniform ratio (default) or one global magnitude ranking
    batch_size: int | None = None  # None: the teacher's
    limit_train: int | None = None
    limit_test: int | None = None
    # Quantization-aware fine-tuning (train.qat) after the distillation: "on" (one epoch by default), "auto" (only
    # when the student with export's INT8 rounding simulated misses the int8 row on the validation split), or "off".
    # "on" by default: the simulation is optimistic (on the suite's one-epoch student it said 99.5% agreement where
    # ONNX Runtime's INT8 file reached 98.8%), and one epoch costs a fifth of the distillation.
    qat: str = "on"
    qat_epochs: int = 1
    qat_lr_scale: float = 0.1  # of --lr: a short, gentle schedule from the distilled weights

    def validate(self) -> CompressConfig:
        if not 0 <= self.ratio < 1:
            raise InvalidInput(f"--ratio must be in (0, 1) (0 with --depth 10 for depth alone), not {self.ratio}.")
        if self.ratio == 0 and self.depth is None:
            raise InvalidInput("--ratio 0 prunes nothing; give a ratio in (0, 1) or --depth 10.")
        if self.depth not in (None, 10):
            raise InvalidInput(f"--depth takes 10 (the ResNet-10 student), not {self.depth}.")
        if self.epochs < 1 or self.lr <= 0 or self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise InvalidInput("--epochs must be at least 1, --lr and --temperature positive, --alpha in [0, 1].")
        if self.qat not in QAT_MODES or self.qat_epochs < 1:
            raise InvalidInput(f"--qat takes {', '.join(QAT_MODES)} and --qat-epochs at least 1, not {self.qat!r} "
                               f"and {self.qat_epochs}.")
        return self


def count_macs_params(model: nn.Module, chw: tuple[int, int, int]) -> tuple[int, int]:
    """Multiply-accumulates of one image and parameters, as Torch-Pruning counts them."""
    import torch_pruning as tp

    was = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *chw))
    model.train(was)
    return int(macs), int(params)


def _torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError:
        raise MissingDependency("compress needs Torch-Pruning (pip install 'resnet-edge[compress]').") from None
    return tp


def load_teacher(path: Path) -> tuple[Checkpoint, ResNet]:
    """The teacher's checkpoint and model; one sentence for a checkpoint that is not one of our basic-block ResNets."""
    state = Checkpoint.read(path)
    model = state.model(path)
    if not isinstance(model, ResNet) or STAGES[model.config.depth][0] != "basic":
        raise InvalidInput(f"{path} is a ResNet-{model.config.depth} with bottleneck blocks; compress prunes the "
                           "basic-block ResNets (10, 18, 34).")
    return state, model


def shallow_student(teacher: ResNet) -> ResNet:
    """A ResNet-10 with the teacher's widths, started from the teacher's stem, head and first block of each stage."""
    cfg = teacher.config
    first = tuple((b[0],) for b in cfg.block_widths) if cfg.block_widths else ()
    student = build_model(replace(cfg, depth=10, block_widths=first))
    own = teacher.state_dict()
    keep = {k: v for k, v in own.items() if not re.match(r"layer\d\.[1-9]", k)}
    student.load_state_dict(keep)
    return student


def prune(model: ResNet, ratio: float, *, global_pruning: bool = False) -> ResNet:
    """Channel-pruned in place by group magnitude (L2), the classifier's outputs kept, widths a multiple of 8;
    returned rebuilt by ``train.model`` from the widths it ended with, so the config and the weights agree."""
    tp = _torch_pruning()
    cfg = model.config
    narrowest_kept = min((cfg.stem_width, *cfg.widths, *(w for b in cfg.block_widths for w in b))) * (1 - ratio)
    if narrowest_kept < MIN_CHANNELS:  # Torch-Pruning would silently leave such a group unpruned
        raise InvalidInput(f"--ratio {ratio} leaves the narrowest layer with {narrowest_kept:.1f} channels; keep at "
                           f"least {MIN_CHANNELS} (a ratio of at most {1 - MIN_CHANNELS / (narrowest_kept / (1 - ratio)):.3g}).")
    chw = (cfg.in_channels, cfg.image_size, cfg.image_size)
    model.eval()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, *chw), importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[model.fc], round_to=ROUND_TO,
                                  global_pruning=global_pruning)
    pruner.step()
    stages = model.stages()
    widths = tuple(s[-1].bn2.num_features for s in stages)
    inner = tuple(tuple(b.conv1.out_channels for b in s) for s in stages)
    narrowest = min((model.conv1.out_channels, *widths, *(w for b in inner for w in b)))
    if narrowest < MIN_CHANNELS:
        raise InvalidInput(f"--ratio {ratio} leaves a layer with {narrowest} channels; keep at least {MIN_CHANNELS} "
                           "(a lower ratio).")
    rebuilt = build_model(replace(cfg, stem_width=model.conv1.out_channels, widths=widths, block_widths=inner))
    rebuilt.load_state_dict(model.state_dict())  # strict: the widths describe exactly the pruned weights
    return rebuilt


def make_student(teacher: ResNet, cc: CompressConfig) -> ResNet:
    student = shallow_student(teacher) if cc.depth == 10 else build_model(teacher.config)
    if cc.depth != 10:
        student.load_state_dict(teacher.state_dict())
    return prune(student, cc.ratio, global_pruning=cc.global_pruning) if cc.ratio > 0 else student


def compress(teacher_path: Path, out: Path, cc: CompressConfig, *, distill_from: Path | None = None,
             resume: bool = False, data=None, console: Console | None = None):
    """Prune (and shorten) the teacher, distil it back on the teacher's split, write ``out/best.pt``."""
    from train.data import load_fashion_mnist
    from train.distill import Distillation
    from train.engine import train

    cc = cc.validate()
    _torch_pruning()
    state, teacher = load_teacher(Path(teacher_path))
    distil_state, distil_model = (state, teacher) if distill_from is None else load_teacher(Path(distill_from))
    t_cfg, d_cfg = teacher.config, distil_model.config
    same = ("in_channels", "num_classes", "image_size", "class_names", "mean", "std", "resize", "source_size")
    differ = [k for k in same if getattr(t_cfg, k) != getattr(d_cfg, k)]
    if differ:
        raise InvalidInput(f"--teacher {distill_from} differs from the checkpoint in {', '.join(differ)}; it must see "
                           "the same data the same way.")
    data = data if data is not None else load_fashion_mnist()
    if len(data.class_names) != t_cfg.num_classes or data.channels != t_cfg.in_channels:
        raise InvalidInput(f"The data has {len(data.class_names)} classes of {data.channels}-channel images; "
                           f"{teacher_path} was trained on {t_cfg.num_classes} of {t_cfg.in_channels}.")
    student = make_student(teacher, cc)
    chw = (t_cfg.in_channels, t_cfg.image_size, t_cfg.image_size)
    macs, params = count_macs_params(student, chw)
    t_macs, t_params = count_macs_params(teacher, chw)
    saved = state.train_config or TrainConfig()
    # the teacher's split: its val_size and seed carve the same validation images, checked against its record
    tcfg = replace(saved, preset="compress", epochs=cc.epochs, lr=cc.lr, depth=student.config.depth,
                   batch_size=cc.batch_size or saved.batch_size, limit_train=cc.limit_train, limit_test=cc.limit_test)
    if data.split is None:
        data = data.with_validation(saved.val_size, saved.seed)
    recorded = ((state.split or {}).get("validation") or {}).get("sha256")
    carved = ((data.split or {}).get("validation") or {}).get("sha256")
    if recorded != carved:
        raise InvalidInput(f"The validation split carved here differs from the one {teacher_path} chose its epoch on; "
                           "compress it with the data it was trained on.")
    record = Compression(teacher=str(teacher_path), teacher_sha256=sha256_file(teacher_path),
                         teacher_test_accuracy=state.metrics.test_acc,
                         distilled_from_sha256=sha256_file(distill_from or teacher_path), ratio=cc.ratio,
                         depth=student.config.depth, round_to=ROUND_TO, importance="group magnitude (L2)",
                         pruning="global" if cc.global_pruning else "uniform", macs=macs, params=params,
                         teacher_macs=t_macs, teacher_params=t_params, temperature=cc.temperature, alpha=cc.alpha)
    console = console or Console(stderr=True)
    console.print(f"student: ResNet-{student.config.depth}, ratio {cc.ratio}: {params / 1e6:.2f}M parameters "
                  f"({params / t_params:.1%} of the teacher's), {macs / 1e6:.1f}M MACs ({macs / t_macs:.1%})")
    teacher_model = distil_model.to(memory_format=torch.channels_last) if tcfg.channels_last else distil_model
    plan = Distillation(student.config, student, teacher_model, cc.temperature, cc.alpha, record)
    qat_dir, result = out / "qat", None
    distilled = resume and ((qat_dir / "last.pt").is_file() or (
        (out / "last.pt").is_file() and Checkpoint.read(out / "last.pt").epoch >= cc.epochs))
    if not distilled:  # a resumed run whose distillation is done goes on with the QAT stage
        result = train(tcfg, out, data=data, resume=resume, console=console, distill=plan)
    if cc.qat == "off":
        return result
    return _quantization_aware(out, cc, tcfg, data, teacher_model, record, resume, console) or result


def _quantization_aware(out: Path, cc: CompressConfig, tcfg: TrainConfig, data, teacher: nn.Module,
                        record: Compression, resume: bool, console: Console):
    """Check the distilled student with export's INT8 rounding simulated on the validation split; where it misses
    the int8 row (or with ``--qat on``), fine-tune it with that rounding in the loop and the same distillation
    loss (``out/qat/``), and publish the result as ``out/best.pt`` (the distilled one kept as
    ``out/distilled.pt``). Returns the QAT run's result, or None when it was not needed."""
    from train import qat
    from train.distill import Distillation
    from train.engine import train

    data = data.with_validation(tcfg.val_size, tcfg.seed) if data.split is None else data
    best = out / "best.pt"
    qat_dir = out / "qat"
    resumed = resume and (qat_dir / "last.pt").is_file()
    source = out / "distilled.pt" if resumed and (out / "distilled.pt").is_file() else best
    ckpt = Checkpoint.read(source)
    val = data.validation.subset(tcfg.limit_test) if data.validation is not None else data.test.subset(tcfg.limit_test)
    before = qat.check(ckpt.model(source), data.train, val)
    console.print(f"INT8 simulated on {before.images} validation images: agreement {before.agreement:.2%}, "
                  f"accuracy {before.accuracy_fp32:.2%} -> {before.accuracy_int8:.2%} ({-before.drop_pt:+.2f} pt); "
                  f"the int8 row asks >= {INT8_MIN_TOP1:.0%} and <= {INT8_MAX_DROP_PT} pt")
    if cc.qat == "auto" and before.passes(INT8_MIN_TOP1, INT8_MAX_DROP_PT) and not resumed:
        replace(ckpt, compression=replace(ckpt.compression, int8_simulated_agreement=before.agreement)).write(best)
        console.print("post-training INT8 suffices: no quantization-aware fine-tuning")
        return None
    student = ckpt.model(source)
    qat.install(student)
    qat_record = replace(record, qat_epochs=cc.qat_epochs, int8_simulated_agreement=before.agreement)
    plan = Distillation(student.config, student, teacher, cc.temperature, cc.alpha, qat_record)
    # a gentle cosine (no one-cycle ramp) from the distilled weights, in float32: bf16 autocast would round the
    # convs' arithmetic besides the INT8 rounding simulated
    qcfg = replace(tcfg, epochs=cc.qat_epochs, lr=cc.lr * cc.qat_lr_scale, schedule="cosine", amp="none")
    console.print(f"quantization-aware fine-tuning: {cc.qat_epochs} epoch(s) at lr {qcfg.lr:g}, INT8 rounding in "
                  "the loop, the same distillation loss")
    result = train(qcfg, qat_dir, data=data, resume=resumed, console=console, distill=plan)
    tuned = Checkpoint.read(qat_dir / "best.pt")
    after = qat.check(tuned.model(qat_dir / "best.pt"), data.train, val)
    console.print(f"after QAT: agreement {after.agreement:.2%}, accuracy {after.accuracy_fp32:.2%} -> "
                  f"{after.accuracy_int8:.2%} ({-after.drop_pt:+.2f} pt)")
    if source == best:
        best.replace(out / "distilled.pt")
    replace(tuned, compression=replace(qat_record, int8_simulated_agreement_after=after.agreement)).write(best)
    return result
