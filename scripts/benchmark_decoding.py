"""Compare decoders, the Gaussian fit and flip TTA on one trained checkpoint's test predictions.

    python scripts/benchmark_decoding.py --cfg configs/examples/cephalometric.yaml \
        --checkpoint output/cephalometric/model_best.model [KEY VALUE ...]

The network runs once per image (twice with TTA, which follows the training flip and is left
out for a model trained without flips); every decoder then decodes the same heatmaps, so the
table isolates decoding. Errors are in original-image pixels (missing landmarks left out).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_cfg  # noqa: E402
from config_auto import prepare_config  # noqa: E402
from trainer.model_trainer_index import load_trainer  # noqa: E402
from transforms.dataloader_transforms import flip_axis  # noqa: E402
from transforms.decoding import DECODERS, heatmap_to_coords  # noqa: E402
from utils.metrics import radial_errors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[10, 20, 30, 40])
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for tta in (False, True):
        cfg = load_cfg(args.cfg, [*args.opts, "INFERENCE.TTA_FLIP", str(tta)])
        cfg, _ = prepare_config(cfg)  # the data check, and numbers for any "auto" values
        if tta and flip_axis(cfg.SAMPLER.DATA_AUG) is None:
            print(f"no flip TTA: the model was trained without flips ({cfg.SAMPLER.DATA_AUG})")
            continue
        trainer = load_trainer(args.checkpoint, cfg)
        dataset = trainer.make_dataset("testing")
        items = [dataset[i] for i in range(len(dataset)) if dataset.samples[i].has_annotation]
        with torch.no_grad():
            heatmaps = [
                trainer.inference_forward(item["image"][None])[0][0].float() for item in items
            ]
        sigma = float(cfg.MODEL.GAUSS_SIGMA)
        targets = [dataset.samples[int(item["index"])].coords for item in items]
        for mode in ("scale_heatmap_first", "scale_pred_coords"):
            for method in (*DECODERS, "fit_gauss"):
                start = time.perf_counter()
                coords = [
                    heatmap_to_coords(
                        hm,
                        item["original_size"].tolist(),
                        mode,
                        method="argmax" if method == "fit_gauss" else method,
                        sigma=sigma,
                        fit_gauss=method == "fit_gauss",
                    ).coords
                    for hm, item in zip(heatmaps, items, strict=True)
                ]
                ms = 1000 * (time.perf_counter() - start) / len(items)
                errors = np.concatenate(
                    [radial_errors(c.numpy(), t) for c, t in zip(coords, targets, strict=True)]
                )
                errors = errors[np.isfinite(errors)]  # missing landmarks are not scored
                sdr = [100 * np.mean(errors <= t) for t in args.thresholds]
                results.append(
                    (
                        method,
                        mode,
                        "on" if tta else "off",
                        errors.mean(),
                        np.median(errors),
                        *sdr,
                        ms,
                    )
                )
    header = [
        "decoder",
        "evaluation mode",
        "flip TTA",
        "MRE",
        "median",
        *[f"SDR@{t:g}" for t in args.thresholds],
        "decode ms/image",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in results:
        cells = [row[0], row[1], row[2]] + [f"{v:.2f}" for v in row[3:5]]
        cells += [f"{v:.1f}" for v in row[5:-1]] + [f"{row[-1]:.1f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
