"""Speed and peak memory of the whole separation pipeline.

* speed: a 20 s mono clip at 22.05 kHz (the first development mixture, or
  synthetic audio if the set is missing), rank 16, beta 1, 200 iterations
  (tol=0), masks and ISTFT of all 16 components included -- the time of
  ``separate(...)``. Target (issue 3): under 2 s on a 2-core CPU.
* memory: ``nmfcore separate`` on a 10-minute stereo 44.1 kHz file
  (synthesised), run in a fresh subprocess; its peak resident set size from
  ``resource.getrusage``. Target: under 2 GB.

Usage::

    python bench/pipeline_speed.py                 # both, 2 torch threads
    python bench/pipeline_speed.py --speed --repeat 5 --threads 2
    python bench/pipeline_speed.py --memory --minutes 10 --mem-iter 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEV = ROOT.parent / "shared" / "dev-audio" / "drums_bass_other__ultimate_run" / "mix.wav"


def speed(repeat: int, threads: int, device: str) -> dict:
    import torch

    from nmfcore.audio import SeparationSettings, load_audio, separate

    torch.set_num_threads(threads)
    if DEV.exists():
        y, sr = load_audio(DEV, sr=22050, mono=True)
        y, source = y[:, : 20 * sr], str(DEV)
    else:
        sr, g = 22050, torch.Generator().manual_seed(0)
        t = torch.arange(20 * sr) / sr
        y = (0.3 * torch.sin(2 * torch.pi * 220 * t) * (torch.sin(2 * torch.pi * 0.5 * t) > 0)
             + 0.05 * torch.randn(20 * sr, generator=g))[None]
        source = "synthetic"
    s = SeparationSettings(rank=16, beta=1.0, n_iter=200, tol=0.0, device=device)
    separate(y[:, : 2 * sr], sr, s.replace(n_iter=5))  # warm-up
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sep = separate(y, sr, s)
        total = time.perf_counter() - t0
        assert sep.n_iter == 200 and sep.components.shape == (16, 1, y.shape[1])
        runs.append({"total": total, **{k: v for k, v in sep.timings.items() if k != "total"}})
    totals = [r["total"] for r in runs]
    out = {"clip": source, "seconds": y.shape[1] / sr, "sr": sr, "rank": 16, "beta": 1.0, "n_iter": 200,
           "threads": threads, "device": device, "min_s": min(totals), "median_s": statistics.median(totals),
           "runs": runs}
    print(f"speed: 20 s mono at 22.05 kHz, rank 16, beta 1, 200 iterations, masks + ISTFT, {threads} threads "
          f"on {device}")
    for i, r in enumerate(runs):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k != "total")
        print(f"  run {i + 1}: {r['total']:.2f} s ({parts})")
    print(f"  min {out['min_s']:.2f} s, median {out['median_s']:.2f} s (target < 2 s on 2 cores)")
    return out


_CHILD = r"""
import resource, sys, json, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
from nmfcore.cli import main
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
code = main(["separate", {path!r}, "-o", {out!r}, "--rank", "{rank}", "--iter", "{n_iter}", "--sources", "2",
             "-q", "--overwrite"])
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"code": code, "peak_kb": peak, "after_import_kb": base, "seconds": elapsed}}))
"""


def memory(minutes: float, n_iter: int, rank: int, threads: int) -> dict:
    import soundfile as sf

    sr, n = 44100, int(minutes * 60 * 44100)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long_stereo.wav"
        rng = np.random.default_rng(0)
        with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:  # written in 10 s blocks
            for start in range(0, n, 10 * sr):
                t = np.arange(start, min(n, start + 10 * sr)) / sr
                tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.25 * t) > 0)
                noise = 0.05 * rng.standard_normal((t.size, 2))
                f.write(np.stack([tone, 0.5 * tone], 1) + noise)
        code = _CHILD.format(root=str(ROOT), threads=threads, path=str(path), out=str(Path(tmp) / "out"),
                             rank=rank, n_iter=n_iter)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"memory child failed:\n{proc.stderr}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update({"minutes": minutes, "channels": 2, "sr": sr, "rank": rank, "n_iter": n_iter,
                "peak_gb": res["peak_kb"] / 2 ** 20})
    print(f"memory: nmfcore separate on a {minutes:g}-minute stereo 44.1 kHz wav (rank {rank}, {n_iter} iterations, "
          f"2 sources written): peak RSS {res['peak_gb']:.2f} GiB (after imports "
          f"{res['after_import_kb'] / 2 ** 20:.2f} GiB), {res['seconds']:.0f} s, exit {res['code']} (target < 2 GB)")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--speed", action="store_true", help="only the speed benchmark")
    p.add_argument("--memory", action="store_true", help="only the memory benchmark")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--mem-iter", type=int, default=20, help="iterations of the memory run (memory does not grow "
                                                           "with iterations)")
    p.add_argument("--mem-rank", type=int, default=8)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    both = not (args.speed or args.memory)
    out = {}
    if args.speed or both:
        out["speed"] = speed(args.repeat, args.threads, args.device)
    if args.memory or both:
        out["memory"] = memory(args.minutes, args.mem_iter, args.mem_rank, args.threads)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
