"""Write the per-method configs of every CIFAR teacher-student pair folder that lack one.

Each pair folder ``beyondkd/configs/<dataset>/<teacher>-<student>/`` holds ``pair.yaml`` (models,
teacher checkpoint, learning rate). For every method this adds ``<method>.yaml`` (the method with
the field's default hyper-parameters, ``base: pair.yaml``) and ``<method>_btkd.yaml`` (the same +
the bias plug-in), and ``configs/<dataset>/teachers/<model>.yaml`` (training on labels) for every
student, which is the CE baseline of the tables. Files that exist are never overwritten, so
hand-tuned configs stay as they are.

    python scripts/gen_pair_configs.py
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "beyondkd" / "configs"

#: method -> (one-line description, params written in the file; {} = the method's defaults)
METHODS: dict[str, tuple[str, str]] = {
    "dkd": ("DKD (Zhao et al. 2022): CE 1, alpha 1, beta 8, T 4, 20 warm-up epochs of 240",
            "{ce_weight: 1.0, alpha: 1.0, beta: 8.0, temperature: 4.0, warmup_epochs: 20}"),
    "ctkd": ("CTKD (Li et al. 2023) over KD: learnable global temperature in [1, 21], lambda 0 -> 1 over 10 epochs",
             "{mode: global, t_min: 1.0, t_max: 21.0, init_temperature: 4.0, lambda_min: 0.0, lambda_max: 1.0, cos_epochs: 10, ce_weight: 0.1, kd_weight: 0.9}"),
    "ctkd_dkd": ("CTKD over DKD",
                 "{mode: global, t_min: 1.0, t_max: 21.0, init_temperature: 4.0, lambda_min: 0.0, lambda_max: 1.0, cos_epochs: 10, ce_weight: 1.0, alpha: 1.0, beta: 8.0, warmup_epochs: 20}"),
    "crd": ("CRD (Tian et al. 2020): CE 1, KD 0, CRD 0.8; 128-d, 16384 negatives, tau 0.07, momentum 0.5",
            "{feat_dim: 128, nce_k: 16384, nce_t: 0.07, nce_momentum: 0.5, ce_weight: 1.0, kd_weight: 0.0, crd_weight: 0.8}"),
    "fitnet": ("FitNet (Romero et al. 2015): hint on the middle stage, beta 100", "{}"),
    "at": ("AT (Zagoruyko & Komodakis 2017): attention maps of every stage, p 2, beta 1000", "{}"),
    "sp": ("SP (Tung & Mori 2019): similarity matrices of the last stage, gamma 3000", "{}"),
    "rkd": ("RKD (Park et al. 2019): distance 25 + angle 50 on pooled embeddings", "{}"),
    "ofd": ("OFD (Heo et al. 2019): pre-ReLU features, margin ReLU, partial L2, weight 1e-3", "{}"),
    "reviewkd": ("ReviewKD (Chen et al. 2021): ABF + HCL over all stages, weight 1, 20 warm-up epochs", "{}"),
    "indistill": ("InDistill (Sarridis et al.): pruned teacher layers transferred layer by layer, then KD", "{}"),
    "slkd": ("SLKD: 2 self-learning teachers, rho 0.5, lambda 1, eta 3, tau 4 (SLKD paper, sec. 4.1)",
             "{sl_teachers: 2, rho: 0.5, lambda_ts: 1.0, eta: 3.0, temperature: 4.0, fusion: logits, mode: parallel}"),
}
#: extra single files: name -> (base, description, method block)
EXTRA = {
    "slkd_sl_teacher_only": ("slkd.yaml", "SLKD with the teacher -> student term off (SLKD Table 4, 'SL-T' row)",
                             "method:\n  params: {lambda_ts: 0.0}\n"),
    "slkd_sequential": ("slkd.yaml", "sequential SLKD (SLKD*, SLKD Tables 5-6): the SL-teachers learn from the teacher for 240 "
                        "epochs, then the student learns from both for 240 epochs (each phase with its own schedule)",
                        "method:\n  params: {mode: sequential, sl_epochs: 240}\ntrain:\n  epochs: 480\n"),
}
SMALL_LR = ("mobilenet", "shufflenet")


def write(path: Path, text: str) -> bool:
    if path.exists():
        return False
    path.write_text(text)
    return True


def main() -> int:
    written = 0
    for dataset in ("cifar10", "cifar100"):
        root = CONFIGS / dataset
        for pair in sorted(p.parent for p in root.glob("*/pair.yaml")):
            tag = f"{dataset}_{pair.name}"
            teacher, student = pair.name.split("-", 1)
            for method, (desc, params) in METHODS.items():
                cmd = f"#   beyondkd distill -c configs/{dataset}/{pair.name}/{method}.yaml\n"
                written += write(pair / f"{method}.yaml",
                                 f"# {desc}; {dataset} {teacher} -> {student}:\n{cmd}"
                                 f"base: pair.yaml\nname: {tag}_{method}\nmethod:\n  name: {method}\n  params: {params}\n")
                written += write(pair / f"{method}_btkd.yaml",
                                 f"# {method} + the BTKD bias plug-in (default preset; see `beyondkd presets`), "
                                 f"{dataset} {teacher} -> {student}\nbase: {method}.yaml\nname: {tag}_{method}_btkd\n"
                                 "method:\n  bias: {}\n")
            for name, (base, desc, block) in EXTRA.items():
                written += write(pair / f"{name}.yaml", f"# {desc}; {dataset} {teacher} -> {student}\n"
                                 f"base: {base}\nname: {tag}_{name}\n{block}")
            lr = "train:\n  optimizer: {lr: 0.01}   # the field's lr for MobileNet/ShuffleNet\n" if student.startswith(SMALL_LR) else ""
            written += write(root / "teachers" / f"{student}.yaml",
                             f"# {student} trained on {dataset} labels only: a teacher, or the CE baseline of a table:\n"
                             f"#   beyondkd train-teacher -c configs/{dataset}/teachers/{student}.yaml\n"
                             f"base: ../base.yaml\nname: {dataset}_teacher_{student}\nmodel: {{name: {student}}}\n{lr}")
    print(f"wrote {written} config files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
