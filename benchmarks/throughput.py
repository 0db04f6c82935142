"""Images per second of a distillation step: our engine versus a plain reference loop.

Two measurements, both in one run on one machine:

1. **Engine vs reference.** For a standard teacher→student pair, the engine's real training
   epoch (:class:`beyondkd.engine.trainer.Trainer`, in-memory :class:`TensorLoader` with
   augmentation on the device, the precision / channels-last / compile settings given) against
   a loop written here the way the field's codebases write it: fp32, a ``DataLoader`` over PIL
   images with torchvision transforms (random crop with padding, flip, ``ToTensor``,
   ``Normalize``), no channels-last, teacher forward under ``no_grad``, Hinton KD, SGD.
2. **Plug-in overhead.** The engine's step time with KD alone versus KD + the BTKD plug-in
   (same pair, same settings).

Images are random ``uint8`` tensors of the pair's input shape: a step's cost does not depend on
pixel values, and no dataset has to be on disk. Timing excludes a warm-up epoch (allocation,
``torch.compile``). Nothing here is asserted in a test.

    python -m benchmarks.throughput --pair cifar --device cpu --batch 64 --steps 20
    python -m benchmarks.throughput --pair cifar --device cuda --batch 512 --precision bf16 \
        --channels-last --compile reduce-overhead --write
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._report import provenance, run_main, write_section
from beyondkd.bias.loss import BiasConfig
from beyondkd.config import TrainConfig
from beyondkd.data import Augment, DatasetInfo, TensorImages, TensorLoader
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.engine.trainer import Trainer
from beyondkd.models import build_model, count_flops

#: teacher, student, image side, classes
PAIRS = {
    "cifar": ("resnet32x4", "resnet8x4", 32, 100),
    "imagenet": ("resnet34_imagenet", "resnet18_imagenet", 224, 1000),
}
MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


@dataclass
class Setup:
    pair: str
    device: torch.device
    batch: int
    steps: int
    precision: str
    channels_last: bool
    compile: str | bool
    workers: int
    seed: int = 0

    @property
    def shape(self) -> tuple[str, str, int, int]:
        return PAIRS[self.pair]


def synthetic_split(s: Setup, count: int) -> TensorImages:
    _, _, side, classes = s.shape
    g = torch.Generator().manual_seed(s.seed)
    info = DatasetInfo("synthetic", classes, 3, side, MEAN, STD, crop_padding=4 if side <= 64 else 0, flip=True)
    images = torch.randint(0, 256, (count, 3, side, side), generator=g, dtype=torch.uint8)
    return TensorImages(images, torch.randint(0, classes, (count,), generator=g), info)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- 1. the engine ---------------------------------------------------------------------------
def engine_images_per_second(s: Setup, bias: BiasConfig | None) -> float:
    """Images/s of the engine's training epoch (a warm-up epoch first, not timed)."""
    teacher_name, student_name, side, classes = s.shape
    torch.manual_seed(s.seed)
    student = build_model(student_name, num_classes=classes, in_channels=3)
    teacher = build_model(teacher_name, num_classes=classes, in_channels=3)
    data = synthetic_split(s, s.batch * s.steps)
    aug = Augment(data.info.crop_padding, data.info.flip)
    loader = TensorLoader(data, s.batch, train=True, augment=aug, device=s.device, seed=s.seed, channels_last=s.channels_last)
    context = DistillerContext(classes, 3, side, len(data), total_steps=2 * s.steps, total_epochs=2, seed=s.seed)
    distiller = build_distiller("kd", student, teacher, {}, bias, context).to(s.device)
    if s.channels_last:
        distiller.to(memory_format=torch.channels_last)
    if s.compile:
        mode = None if s.compile in (True, "default") else s.compile
        distiller.student.compile(mode=mode)
        distiller.teacher.compile(mode=mode)
    cfg = TrainConfig(epochs=2, precision=s.precision, channels_last=s.channels_last, progress_bar=False,
                      log_every=10**9, device=str(s.device))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(distiller, loader, loader, cfg, out, s.device)
        trainer._train_epoch()  # warm-up: allocator, cudnn autotune, compilation
        trainer.epoch, trainer.step_in_epoch = 1, 0
        sync(s.device)
        record = trainer._train_epoch()
        sync(s.device)
    return record["images_per_second"]


# -- 2. the reference loop, written as the field's codebases write it --------------------------
class PILDataset(torch.utils.data.Dataset):
    """uint8 arrays served as PIL images through torchvision transforms (CIFAR-style)."""

    def __init__(self, data: TensorImages, train: bool) -> None:
        from torchvision import transforms

        self.images = data.images.permute(0, 2, 3, 1).numpy()
        self.targets = data.targets.tolist()
        side = data.images.shape[-1]
        crop = [transforms.RandomCrop(side, padding=4)] if side <= 64 else [transforms.RandomResizedCrop(side, scale=(0.9, 1.0))]
        self.transform = transforms.Compose(
            crop + [transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
        ) if train else transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(np.ascontiguousarray(self.images[i]))), self.targets[i]


def reference_images_per_second(s: Setup) -> float:
    """Images/s of a plain fp32 KD loop with a PIL DataLoader (a warm-up pass first)."""
    teacher_name, student_name, _, classes = s.shape
    torch.manual_seed(s.seed)
    student = build_model(student_name, num_classes=classes, in_channels=3).to(s.device)
    teacher = build_model(teacher_name, num_classes=classes, in_channels=3).to(s.device).eval()
    data = synthetic_split(s, s.batch * s.steps)
    loader = torch.utils.data.DataLoader(PILDataset(data, train=True), batch_size=s.batch, shuffle=True,
                                         num_workers=s.workers, pin_memory=s.device.type == "cuda", drop_last=True)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    t = 4.0

    def epoch() -> int:
        seen = 0
        student.train()
        for images, targets in loader:
            images, targets = images.to(s.device), targets.to(s.device)
            with torch.no_grad():
                t_logits = teacher(images)
            logits = student(images)
            kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(t_logits / t, 1), reduction="batchmean") * t * t
            loss = 0.1 * F.cross_entropy(logits, targets) + 0.9 * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += images.shape[0]
        return seen

    epoch()
    sync(s.device)
    t0 = time.perf_counter()
    seen = epoch()
    sync(s.device)
    return seen / (time.perf_counter() - t0)


def step_flops(s: Setup) -> float:
    """FLOPs of one image's step: teacher forward + student forward and backward (≈ 3× forward)."""
    teacher_name, student_name, side, classes = s.shape
    # count_flops gives multiply-accumulates; one MAC is two FLOPs
    t = 2 * count_flops(build_model(teacher_name, num_classes=classes, in_channels=3), side, 3)
    st = 2 * count_flops(build_model(student_name, num_classes=classes, in_channels=3), side, 3)
    return float(t + 3 * st)


#: dense bf16 peak (FLOP/s) of GPUs we report against
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=sorted(PAIRS), default="cifar")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", default="", help="'' (off), default, reduce-overhead or max-autotune")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats; the median is reported")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--write", action="store_true", help="write the result into BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = Setup(args.pair, torch.device(args.device), args.batch, args.steps, args.precision, args.channels_last,
              args.compile or False, args.workers)
    runs: dict[str, list[float]] = {"reference": [], "engine_kd": [], "engine_kd_btkd": []}
    for _ in range(args.repeats):  # alternate so that drift in machine load hits all three alike
        runs["reference"].append(reference_images_per_second(s))
        runs["engine_kd"].append(engine_images_per_second(s, None))
        runs["engine_kd_btkd"].append(engine_images_per_second(s, BiasConfig()))
    med = {k: float(np.median(v)) for k, v in runs.items()}
    teacher_name, student_name, side, _ = s.shape
    flops = step_flops(s)
    overhead = 100.0 * (med["engine_kd"] / med["engine_kd_btkd"] - 1.0)
    lines = [
        f"pair {teacher_name} -> {student_name} at {side}x{side}, batch {s.batch}, {s.steps} timed steps, "
        f"device {s.device}, engine settings: precision {s.precision}, channels_last {s.channels_last}, "
        f"compile {s.compile or 'off'}; reference: fp32 DataLoader+PIL, {s.workers} workers",
        "",
        "| loop | images/s (median of %d) | runs |" % args.repeats,
        "|---|---|---|",
    ]
    for k, label in (("reference", "reference loop (field style)"), ("engine_kd", "beyondkd engine, KD"),
                     ("engine_kd_btkd", "beyondkd engine, KD + BTKD plug-in")):
        lines.append(f"| {label} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in runs[k])} |")
    lines += [
        "",
        f"- engine / reference: {med['engine_kd'] / med['reference']:.2f}x",
        f"- plug-in step-time overhead versus KD: {overhead:+.1f}% (target: within 3%)",
        f"- step FLOPs per image (teacher fwd + 3x student fwd): {flops / 1e9:.3f} GFLOP; engine achieves "
        f"{med['engine_kd'] * flops / 1e12:.3f} TFLOP/s",
    ]
    if s.device.type == "cuda":
        name = torch.cuda.get_device_name(s.device)
        peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
        if peak:
            lines.append(f"- fraction of {name} dense bf16 peak: {100 * med['engine_kd'] * flops / peak:.2f}%")
    text = "\n".join(lines)
    print(text)
    if args.write:
        section = f"throughput-{s.pair}-{s.device.type}-b{s.batch}-{s.precision}"
        write_section(section, f"## Throughput: {teacher_name} -> {student_name}, {s.device.type}, batch {s.batch}, {s.precision}\n\n"
                      + provenance() + "\n" + text)
    return 0


if __name__ == "__main__":
    run_main(main)
