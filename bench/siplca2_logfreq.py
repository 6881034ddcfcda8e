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
* ``SIPLCA2``: the magnitude STFT (same n_fft and hop) mapped to a
  log-frequency axis by a triangular filterbank ``F`` (``--bins-per-octave``
  bins from 32.7 Hz to Nyquist, each filter at least one STFT bin wide:
  ``L = F |X|``), then :class:`nmfcore.plca.SIPLCA2` on ``L`` (shape
  ``(1, 1, bins, frames)``) at the same rank with a kernel of
  ``bins - shifts + 1`` log-frequency bins by ``--frames`` frames: each
  template can move up by ``shifts - 1`` bins (a pitch shift) and lasts a
  few frames. Each component's log-frequency reconstruction ``Y_r`` gives a
  soft mask ``Y_r / sum_k Y_k`` (the pipeline's ``mask_power=1``), mapped to
  the linear STFT bins by linear interpolation along log-frequency (bins
  below 32.7 Hz take the lowest log bin's mask), so the masks still sum to
  one; each mask times the mixture's STFT, inverted with
  :func:`nmfcore.audio.spectral.istft`, is a component's waveform.

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
import math
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
from nmfcore.audio.spectral import istft, stft  # noqa: E402
from nmfcore.plca import SIPLCA2  # noqa: E402

FMIN = 32.70  # C1


def log_filterbank(sr: int, n_fft: int, bins_per_octave: int, fmin: float = FMIN):
    """``(F, centres)``: triangular filters (bins, n_fft // 2 + 1) at log-spaced centres from ``fmin`` to Nyquist.

    Each filter spans its neighbours' centres, widened to at least one STFT
    bin on each side (below a few hundred Hz the log spacing is finer than
    the STFT's), and is normalised to sum to one.
    """
    n_bins = int(math.floor(bins_per_octave * math.log2(sr / 2 / fmin))) + 1
    centres = fmin * 2.0 ** (torch.arange(n_bins, dtype=torch.float64) / bins_per_octave)
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sr / n_fft
    df = sr / n_fft
    ratio = 2.0 ** (1.0 / bins_per_octave)
    lo = torch.minimum(centres / ratio, centres - df)
    hi = torch.maximum(centres * ratio, centres + df)
    up = (freqs[None] - lo[:, None]) / (centres - lo)[:, None]
    down = (hi[:, None] - freqs[None]) / (hi - centres)[:, None]
    F = torch.clamp(torch.minimum(up, down), min=0.0)
    F = F / F.sum(1, keepdim=True)
    return F.float(), centres


def log_to_linear(sr: int, n_fft: int, centres: torch.Tensor) -> torch.Tensor:
    """``D`` (n_fft // 2 + 1, bins): linear interpolation along log-frequency of a log-bin quantity at every STFT
    bin (rows sum to one; bins outside the centres take the nearest end)."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sr / n_fft
    pos = torch.log2(freqs.clamp_min(1e-9) / centres[0]) / torch.log2(centres[1] / centres[0])
    pos = pos.clamp(0, len(centres) - 1)
    i0 = pos.floor().long().clamp(max=len(centres) - 2)
    w1 = pos - i0
    D = torch.zeros(len(freqs), len(centres), dtype=torch.float64)
    D[torch.arange(len(freqs)), i0] = 1 - w1
    D[torch.arange(len(freqs)), i0 + 1] += w1
    return D.float()


def siplca2_components(mix: torch.Tensor, sr: int, rank: int, seed: int, args) -> torch.Tensor:
    """Component waveforms (R, channels, samples) of SIPLCA2 on the log-frequency magnitude."""
    n_fft, hop = args.n_fft, args.hop
    X = stft(mix.mean(0), n_fft=n_fft, hop_length=hop)  # (freq, frames)
    F, centres = log_filterbank(sr, n_fft, args.bins_per_octave)
    L = F @ X.abs()  # (bins, frames)
    bins, frames = L.shape
    kernel = (bins - args.shifts + 1, args.frames)
    model = SIPLCA2((1, 1, bins, frames), rank, kernel, generator=seed)
    model.fit(L[None, None], max_iter=args.n_iter, tol=0)
    with torch.no_grad():
        W, H, Z = model.W, model.H, model.Z
        Y = torch.stack([SIPLCA2.reconstruct(H[:, r:r + 1], W[:, r:r + 1], Z[r:r + 1])[0, 0] for r in range(rank)])
    masks = Y / Y.sum(0).clamp_min(torch.finfo(Y.dtype).tiny)  # (R, bins, frames), mask_power = 1
    masks = torch.where(Y.sum(0) > 0, masks, torch.full_like(masks, 1.0 / rank))
    lin = log_to_linear(sr, n_fft, centres) @ masks  # (R, freq, frames): sums to one over R
    Xc = stft(mix, n_fft=n_fft, hop_length=hop)  # (channels, freq, frames)
    return istft(lin[:, None] * Xc[None], n_fft=n_fft, hop_length=hop, length=mix.shape[-1])


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
    methods = ("NMF", "NMF random", "SIPLCA2")
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
                if m == "SIPLCA2":
                    comps = siplca2_components(it["mix"], it["sr"], rank, seed, args)
                else:
                    st = SeparationSettings(model="NMF", rank=rank, n_iter=args.n_iter, tol=0.0, n_fft=args.n_fft,
                                            hop_length=args.hop, seed=seed,
                                            init="random" if m == "NMF random" else "nndsvda")
                    comps = separate(it["mix"], it["sr"], st).components
                times[m] += time.perf_counter() - t
                res[m].setdefault(it["name"], {})[seed] = score(comps, it)
            print(f"{it['name']:<44} seed {seed}: "
                  + "  ".join(f"{m} {np.mean(res[m][it['name']][seed]):6.2f}" for m in methods), flush=True)
    print(f"\n# python bench/siplca2_logfreq.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# {len(items)} mixtures, seeds {seeds}, rank {args.mult} x sources, n_fft {args.n_fft}, hop {args.hop}, "
          f"{args.n_iter} iterations; SIPLCA2: {args.bins_per_octave} bins/octave from {FMIN} Hz, {args.shifts} "
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
    p.add_argument("--bins-per-octave", type=int, default=24)
    p.add_argument("--shifts", type=int, default=13, help="pitch shifts of a template, in log-frequency bins")
    p.add_argument("--frames", type=int, default=4, help="frames of a template")
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
