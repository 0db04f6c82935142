"""``beyondkd eval``: accuracy of a saved model on a dataset's validation split."""

from __future__ import annotations

import argparse
import json


def _eval(args: argparse.Namespace) -> int:
    from beyondkd.config import load_config
    from beyondkd.engine.build import build_loaders, load_trained_model, resolve_device
    from beyondkd.engine.evaluate import evaluate
    from beyondkd.errors import ConfigError

    model, ckpt = load_trained_model(args.checkpoint, weights_only=not args.unsafe_load)
    meta = ckpt["model_meta"]
    dataset = args.dataset or meta.get("dataset") or "fashion_mnist"
    overrides = [f"data.name={dataset}", f"data.val_batch_size={args.batch_size}", f"train.device={args.device}", "data.augment=false"]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if meta.get("image_size"):
        overrides.append(f"data.image_size={meta['image_size']}")
    config = load_config(None, overrides, raw={"model": {"name": meta["name"]}})
    device = resolve_device(config.train.device)
    _, _, val_loader, info, _ = build_loaders(config, device)
    if info.num_classes != int(meta["num_classes"]):
        raise ConfigError(f"{args.checkpoint} predicts {meta['num_classes']} classes but dataset '{info.name}' has {info.num_classes}")
    model.to(device).eval()
    metrics = evaluate(model, val_loader)
    print(f"{meta['name']} on {info.name} val: top-1 {metrics['val_acc']:.2f}%, top-5 {metrics['val_top5']:.2f}%, loss {metrics['val_loss']:.4f}")
    print(json.dumps({"checkpoint": str(args.checkpoint), "dataset": info.name, **metrics}))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on a validation split")
    p.add_argument("--checkpoint", "-k", required=True, help="a beyondkd checkpoint (best.pt / last.pt)")
    p.add_argument("--dataset", help="dataset name (default: the one the model was trained on)")
    p.add_argument("--data-root", help="dataset folder (default: the dataset's standard location)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--unsafe-load", action="store_true", help="load with weights_only=False (only for files you trust)")
    p.set_defaults(func=_eval)
