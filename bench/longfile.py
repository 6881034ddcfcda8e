"""Peak memory and time of ``nmfcore separate`` on long files: block by block against in memory.

A synthetic mono recording (harmonic notes and noise bursts, 22.05 kHz,
written as 16-bit WAV) of ``--minutes`` x 1, 2 and 4 is separated by
``nmfcore separate`` in a fresh process, once by the block-by-block path
(``--long-file 0``: mini-batch ``mu_batch``, one batch per block of
``--batch-size`` frames) and once in memory (the full solver), both rank 8,
beta 1, ``--iter`` iterations / epochs (``--tol 0``), two sources written.
Each child reports its peak resident set size (``VmHWM`` from
``/proc/self/status``: ``ru_maxrss`` survives ``execve``) and its wall time.

Target (issue 16): the block-by-block path's peak memory does not grow with
the length beyond ``H`` (frames x rank), so 4x / 2x stays within 10%.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/longfile.py --minutes 5 --iter 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
import torch
torch.set_num_threads({threads})
from nmfcore.cli import main
t = time.perf_counter()
code = main({argv!r})
wall = time.perf_counter() - t
peak = [int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')][0] / 1024
print(json.dumps({{"code": code, "wall_s": wall, "peak_mib": peak}}))
"""


def synth(path: Path, minutes: float, sr: int = 22050, seed: int = 0) -> None:
    """Notes of a few pitches and noise bursts, written block by block (never the whole file in memory)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * sr)
    block = sr * 10
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as snd:
        for start in range(0, n, block):
            t = np.arange(start, min(n, start + block)) / sr
            y = np.zeros_like(t)
            for f0, period in ((110.0, 2.0), (330.0, 3.0), (880.0, 5.0)):
                gate = (t % period) < period / 2
                y += gate * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5)) * 0.12
            y += ((t % 0.5) < 0.04) * rng.standard_normal(t.size) * 0.1
            snd.write(y.astype(np.float32))


def run(path: Path, out: Path, long: bool, args) -> dict:
    argv = ["separate", str(path), "-o", str(out), "--rank", "8", "--iter", str(args.iter), "--tol", "0", "-q",
            "--sources", "2", "--overwrite", "--batch-size", str(args.batch_size),
            "--long-file", "0" if long else "1e9", "--init", args.init]
    code = CHILD.format(threads=args.threads, argv=argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="length at 1x (default 5)")
    p.add_argument("--iter", type=int, default=5, help="iterations / epochs (default 5)")
    p.add_argument("--batch-size", type=int, default=1024, help="frames per block (default 1024)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scales", default="1,2,4")
    p.add_argument("--init", default="nndsvda", help="nndsvda (default) or random")
    p.add_argument("--paths", default="blocks,memory", help="which paths to run (default both)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for scale in (float(s) for s in args.scales.split(",")):
            path = tmp / f"x{scale:g}.wav"
            synth(path, args.minutes * scale)
            for long in [name == "blocks" for name in args.paths.split(",")]:
                r = run(path, tmp / "out", long, args)
                rows.append({"minutes": args.minutes * scale, "path": "blocks" if long else "memory", **r})
                print(f"{args.minutes * scale:6.1f} min  {'blocks' if long else 'memory':7s}  "
                      f"peak {r['peak_mib']:8.1f} MiB  wall {r['wall_s']:7.1f} s", flush=True)
            path.unlink()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
