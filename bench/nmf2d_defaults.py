"""Which NMF2D settings factorise a recording into meaningful parts in seconds.

NMF2D's H has (F - kf + 1) x (T - kt + 1) entries per component: with a small
patch (kf bins) H alone is as large as the spectrogram and the model can copy
the data instead of explaining it. This script fits NMF2D on the first
``--seconds`` of each development mixture for a few patch sizes, written as
frequency *shifts* s (kf = F - s + 1: every template spans almost the whole
spectrum and moves up by at most s - 1 bins) and frames kt, and prints per
setting:

* ``s/it``: seconds per iteration (one torch thread, as the app's fit on 2 cores);
* ``fit s``: the whole fit (``n_iter`` iterations, ``tol`` 0);
* ``rel.err``: ||V - WH|| / ||V|| (0 means the model copied the data);
* ``copy``: mean correlation of each component's spectrogram with the mixture's
  (near 1: every component looks like the whole mix);
* ``best dB``: mean SI-SDR improvement over the mixture of the best grouping of
  the components into the reference stems (what the factorisation can deliver).

Usage::

    python bench/nmf2d_defaults.py                     # 4 mixtures, 10 s each
    python bench/nmf2d_defaults.py --items 2 --seconds 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmfcore.audio import SeparationSettings, best_grouping, load_audio, separate, si_sdr_matrix  # noqa: E402

DEFAULT_DATA = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "dev-audio",
                     Path("/work/shared/dev-audio")) if p.is_dir()), Path("dev-audio"))

# (label, n_fft, hop, kernel as ("shifts", s, kt) or ("bins", kf, kt), rank, n_iter)
CONFIGS = [
    ("before: (16, 4) bins r=8", 2048, 512, ("bins", 16, 4), 8, 5),   # 5 iterations: its pace and copying only
    ("s=4 kt=4 r=8 (chosen)", 512, 256, ("shifts", 4, 4), 8, 100),
    ("s=2 kt=4 r=8", 512, 256, ("shifts", 2, 4), 8, 100),
    ("s=8 kt=4 r=8", 512, 256, ("shifts", 8, 4), 8, 100),
    ("s=4 kt=2 r=8", 512, 256, ("shifts", 4, 2), 8, 100),
    ("s=4 kt=4 r=4", 512, 256, ("shifts", 4, 4), 4, 100),
    ("s=4 kt=4 r=8 n_fft 1024", 1024, 512, ("shifts", 4, 4), 8, 100),
    ("NMF r=8 (reference)", 512, 256, None, 8, 100),
]


def kernel_of(spec, n_fft):
    if spec is None:
        return 1
    kind, a, kt = spec
    F = n_fft // 2 + 1
    return (F - a + 1, kt) if kind == "shifts" else (a, kt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--items", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--only", default=None, help="comma-separated config labels (prefix match)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    folders = sorted(p for p in args.data.iterdir() if p.is_dir() and (p / "meta.json").exists())[:args.items]
    items = []
    for folder in folders:
        names = json.loads((folder / "meta.json").read_text())["sources"]
        mix, sr = load_audio(folder / "mix.wav")
        n = int(args.seconds * sr)
        refs = torch.stack([load_audio(folder / f"{s}.wav", sr=sr)[0][:, :n] for s in names])
        items.append((folder.name.split("__")[0], mix[:, :n], refs, sr))
    print(f"{len(items)} mixtures x {args.seconds:g} s: {', '.join(i[0] for i in items)}; 1 torch thread")
    print(f"{'setting':26s} {'kernel':>12s} {'s/it':>6s} {'fit s':>6s} {'rel.err':>7s} {'copy':>5s} {'best dB':>7s}")
    for label, n_fft, hop, kspec, rank, n_iter in CONFIGS:
        if args.only and not any(label.startswith(o) for o in args.only.split(",")):
            continue
        kernel = kernel_of(kspec, n_fft)
        model = "NMF" if kspec is None else "NMF2D"
        per_it, fits, errs, copies, gains = [], [], [], [], []
        for name, mix, refs, sr in items:
            s = SeparationSettings(model=model, rank=rank, n_iter=n_iter, tol=0.0, kernel_size=kernel,
                                   n_fft=n_fft, hop_length=hop, init="random" if model == "NMF2D" else "nndsvda")
            t = time.perf_counter()
            sep = separate(mix, sr, s)
            dt = time.perf_counter() - t
            fits.append(dt)
            per_it.append(sep.timings["fit"] / max(1, sep.n_iter))
            V, Vh = sep.spectrogram, sep.reconstruction
            errs.append(float(np.linalg.norm(V - Vh) / np.linalg.norm(V)))
            C = sep.component_spectrograms.reshape(sep.rank, -1)
            v = V.ravel() - V.mean()
            cc = [float(np.dot(c - c.mean(), v) / (np.linalg.norm(c - c.mean()) * np.linalg.norm(v) + 1e-12))
                  for c in C if c.any()]
            copies.append(float(np.mean(cc)) if cc else float("nan"))
            groups = best_grouping(sep, refs)
            est = sep.sources(groups)
            M = si_sdr_matrix(est, refs)
            base = si_sdr_matrix(mix[None].expand(len(refs), -1, -1), refs)
            gains.append(float(np.mean(np.diag(M) - np.diag(base))))
        kern = "-" if kspec is None else f"{kernel[0]}x{kernel[1]}"
        print(f"{label:26s} {kern:>12s} {np.mean(per_it):6.3f} {np.mean(fits):6.1f} {np.mean(errs):7.3f} "
              f"{np.mean(copies):5.2f} {np.mean(gains):7.2f}", flush=True)


if __name__ == "__main__":
    main()
