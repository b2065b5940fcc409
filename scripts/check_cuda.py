"""Check a config's CUDA path: training steps with and without mixed precision, and inference.

python scripts/check_cuda.py --cfg configs/examples/cephalometric.yaml [--landmarks 19]
    [--steps 30] [KEY VALUE ...]

For AMP on and off it builds the config's trainer on CUDA, runs ``train_step`` on random batches
of SOLVER.DATA_LOADER_BATCH_SIZE at the network's input size, and prints samples/s, peak memory,
the loss and whether the weights moved; then one whole-image prediction (for patch training, at
--image-size, stitched or fully convolutional as the config says). Exits 1 when a check fails.
Data loading is not measured: run a short training for that (its log prints samples/s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from config import auto_keys, load_cfg  # noqa: E402
from inference.timing import time_whole_image_prediction  # noqa: E402
from trainer.auto_batch_size import synthetic_batch  # noqa: E402
from trainer.model_trainer_index import build_trainer  # noqa: E402
from utils.errors import run_command  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--landmarks", type=int, default=19)
    parser.add_argument("--steps", type=int, default=30, help="timed steps after 5 warm-up steps")
    parser.add_argument("--image-size", type=int, nargs=2, default=[1671, 1340], metavar="H W")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def check_training(cfg, num_landmarks: int, steps: int, amp: bool) -> dict:
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.AUTO_MIXED_PRECISION = amp
    cfg.TRAINER.DEVICE = "cuda"
    cfg.freeze()
    trainer = build_trainer(cfg)
    trainer.initialize(num_landmarks)
    sampling = trainer.sampling
    batch = synthetic_batch(
        trainer.solver.batch_size,
        sampling.network_input_size,
        num_landmarks,
        sampling.input_channels,
    )
    before = [p.detach().clone() for p in trainer.network.parameters()]
    for _ in range(5):
        trainer.train_step(batch)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [trainer.train_step(batch) for _ in range(steps)]
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad(), trainer.autocast():
        output = trainer.network(batch["image"].cuda())
    first = output[0] if isinstance(output, list | tuple) else next(iter(output.values()))
    after = list(trainer.network.parameters())
    moved = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    return {
        "trainer": trainer,
        "samples_per_s": steps * trainer.solver.batch_size / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "loss": losses[-1],
        "finite": all(torch.isfinite(torch.tensor(losses))),
        "moved": moved,
        "output_dtype": str(first.dtype).replace("torch.", ""),
        "scale": trainer.scaler.get_scale() if amp else None,
    }


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("CUDA is not available on this machine", file=sys.stderr)
        return 1
    cfg = load_cfg(args.cfg, args.opts)
    auto = auto_keys(cfg)
    if auto:
        print(f"set {auto} to numbers (python main.py --cfg ... --print-config)", file=sys.stderr)
        return 1
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, config {args.cfg}")
    ok = True
    results = {}
    for amp in (True, False):
        result = check_training(cfg, args.landmarks, args.steps, amp)
        results[amp] = result
        ok &= result["finite"] and result["moved"]
        ok &= result["output_dtype"] == ("float16" if amp else "float32")
        print(
            f"train AMP {'on ' if amp else 'off'}: batch {result['trainer'].solver.batch_size} at "
            f"{list(result['trainer'].sampling.network_input_size)}: {result['samples_per_s']:.1f} "
            f"samples/s, peak {result['peak_gib']:.2f} GiB, loss {result['loss']:.4g}, "
            f"output {result['output_dtype']}, weights moved {result['moved']}"
            + (f", grad scale {result['scale']:.0f}" if amp else "")
        )
    speedup = results[True]["samples_per_s"] / results[False]["samples_per_s"]
    print(f"AMP speed-up: {speedup:.2f}x")
    inference = time_whole_image_prediction(results[True]["trainer"], args.image_size, 1)
    ok &= inference["finite"]
    print(
        f"predict one {inference['size']} image (AMP): {inference['seconds']:.3f} s, peak "
        f"{inference['peak_gib']:.2f} GiB, coordinates finite {inference['finite']}"
    )
    print("all checks passed" if ok else "A CHECK FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
