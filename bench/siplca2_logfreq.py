"""SIPLCA2 on a log-frequency spectrogram against NMF, blind separation on the development set.

Issue 15: "SIPLCA2 on a log-frequency spectrogram makes one template shift
in pitch: offer it in the pipeline if it separates at least as well as NMF".

For every mixture of the development set (``/work/shared/dev-audio``, 8
mixtures with stems, 16-20 s each, used whole) and every seed:

* ``NMF``: the pipeline (:func:`nmfcore.audio.separate`) with its defaults
  (KL, ``nndsvda`` initialisation, magnitude-ratio masks ``mask_power=1``,
  n_fft 2048, hop 512, 200 iterations, ``tol=0``) at rank 4 x sources. Its
  initialisation is deterministic: every seed gives the same result.
* ``NMF random``: the same with ``init='random'`` (the seed matters), the
  like-for-like baseline of a randomly initialised EM fit.
* ``SIPLCA2``: the pipeline's SIPLCA2 model (``model='SIPLCA2'``, same
  STFT, rank and iterations): the magnitude STFT mapped to a log-frequency
  axis by a triangular filterbank (24 bins per octave from STFT bin 3, 32 Hz
  at 22050 Hz: :func:`nmfcore.audio.spectral.log_frequency_matrices`),
  :class:`nmfcore.plca.SIPLCA2` on it with a kernel of ``bins - shifts + 1``
  log-frequency bins by ``--frames`` frames (each template can move up by
  ``shifts - 1`` quarter tones and lasts a few frames), each component's
  reconstruction interpolated back to the STFT bins, the pipeline's masks
  (``mask_power=1``), which still sum to one, and ISTFT.

All three: components grouped by the oracle best grouping
(:func:`nmfcore.audio.best_grouping`, as ``best`` in ``bench/separation.py``),
scored with BSS Eval SDR (SI-SDR without a backend). Printed: per mixture
and method the mean SDR over its sources and seeds, then per method the
mean over all sources (and its spread over seeds: min and max of the
per-seed means) and the fit time.

Usage::

    PYTHONPATH=. python bench/siplca2_logfreq.py            # 8 mixtures x 3 seeds, ~15 min, one thread
    PYTHONPATH=. python bench/siplca2_logfreq.py --quick    # 2 mixtures, 1 seed, 100 iterations
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from separation import DEFAULT_DATA, load_items, sdr  # noqa: E402

from nmfcore.audio import SeparationSettings, best_grouping, separate  # noqa: E402
from nmfcore.audio.models import LOGFREQ2D  # noqa: E402

SIPLCA2_SHIFTS, SIPLCA2_FRAMES = 13, 4  # the pipeline's defaults for SIPLCA2 at n_fft 2048


def settings(method: str, rank: int, seed: int, args) -> SeparationSettings:
    """The pipeline's settings of ``method`` (all with ``tol=0``, ``args.n_iter`` iterations)."""
    common = dict(rank=rank, n_iter=args.n_iter, tol=0.0, n_fft=args.n_fft, hop_length=args.hop, seed=seed)
    if method == "SIPLCA2":
        bins = LOGFREQ2D.n_bins(args.n_fft // 2 + 1)
        return SeparationSettings(model="SIPLCA2", kernel_size=(bins - args.shifts + 1, args.frames), **common)
    return SeparationSettings(model="NMF", init="random" if method == "NMF random" else "nndsvda", **common)


def score(components: torch.Tensor, item) -> list:
    """Per-source SDR of the best grouping of ``components``."""
    sep = types.SimpleNamespace(components=components, mixture=item["mix"])
    groups = best_grouping(sep, item["refs"])
    est = torch.stack([components[g].sum(0) if g else torch.zeros_like(item["mix"]) for g in groups])
    return [float(x) for x in sdr(est, item["refs"], item["names"])[0]]


def run(args):
    items = load_items(args.data)
    if args.quick:
        items = items[:2]
    seeds = list(range(args.seeds))
    methods = tuple(args.methods.split(","))
    res = {m: {} for m in methods}  # method -> item -> seed -> per-source SDRs
    times = dict.fromkeys(methods, 0.0)
    for it in items:
        S = len(it["names"])
        rank = args.mult * S
        for seed in seeds:
            for m in methods:
                if m == "NMF" and seed > 0:  # deterministic initialisation: the same as seed 0
                    res[m].setdefault(it["name"], {})[seed] = res[m][it["name"]][0]
                    continue
                t = time.perf_counter()
                comps = separate(it["mix"], it["sr"], settings(m, rank, seed, args)).components
                times[m] += time.perf_counter() - t
                res[m].setdefault(it["name"], {})[seed] = score(comps, it)
            print(f"{it['name']:<44} seed {seed}: "
                  + "  ".join(f"{m} {np.mean(res[m][it['name']][seed]):6.2f}" for m in methods), flush=True)
    print(f"\n# python bench/siplca2_logfreq.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# {len(items)} mixtures, seeds {seeds}, rank {args.mult} x sources, n_fft {args.n_fft}, hop {args.hop}, "
          f"{args.n_iter} iterations; SIPLCA2: 24 bins/octave from STFT bin 3, {args.shifts} "
          f"shifts, {args.frames} frames; torch threads {torch.get_num_threads()}; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n| mixture | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for it in items:
        cells = [f"{np.mean([x for s in seeds for x in res[m][it['name']][s]]):.2f}" for m in methods]
        print(f"| {it['name']} | " + " | ".join(cells) + " |")
    print("\n| method | mean SDR over all sources and seeds, dB | per-seed means: min, max | fit + masks, s |")
    print("|---|---|---|---|")
    for m in methods:
        per_seed = [np.mean([x for it in items for x in res[m][it["name"]][s]]) for s in seeds]
        print(f"| {m} | {np.mean(per_seed):.2f} | {min(per_seed):.2f}, {max(per_seed):.2f} | {times[m]:.0f} |")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.exists() else Path("/work/shared/dev-audio"))
    p.add_argument("--quick", action="store_true", help="2 mixtures, 1 seed, 100 iterations")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--mult", type=int, default=4, help="rank = mult x number of sources")
    p.add_argument("--n-iter", type=int, default=200)
    p.add_argument("--n-fft", type=int, default=2048)
    p.add_argument("--hop", type=int, default=512)
    p.add_argument("--shifts", type=int, default=SIPLCA2_SHIFTS, help="pitch shifts of a template (log bins)")
    p.add_argument("--frames", type=int, default=SIPLCA2_FRAMES, help="frames of a template")
    p.add_argument("--methods", default="NMF,NMF random,SIPLCA2", help="comma-separated, of these three")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.n_iter = 1, 100
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    run(args)
    print(f"\ntotal {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
