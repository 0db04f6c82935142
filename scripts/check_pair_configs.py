"""Build the distiller of every CIFAR pair config on the CPU (no data): finds configs that cannot build.

    python scripts/check_pair_configs.py
"""
import glob, time
import torch
torch.set_num_threads(1)
from beyondkd.config import load_config
from beyondkd.distillers import build_distiller, DistillerContext
from beyondkd.models import build_model
from beyondkd.engine.build import parse_bias
fails=[]; n=0; t0=time.time()
for f in sorted(glob.glob("beyondkd/configs/cifar10*/*-*/*.yaml")):
    if f.endswith("pair.yaml") or "_btkd" in f: continue
    cfg = load_config(f)
    classes = 10 if "/cifar10/" in f else 100
    try:
        s = build_model(cfg.student.name, classes, 3); t = build_model(cfg.teacher.name, classes, 3)
        ctx = DistillerContext(classes, 3, 32, 50000, 1000, 240, 0)
        build_distiller(cfg.method.name, s, t, cfg.method.params, parse_bias(cfg.method.bias), ctx); n+=1
    except Exception as e:
        fails.append((f, str(e).splitlines()[0][:200]))
print(n, "built in", round(time.time()-t0), "s")
for x in fails: print(x)
