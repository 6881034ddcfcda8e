"""Separation quality of nmfcore on real mixtures with reference stems.

For every mixture in the development set (default ``../shared/dev-audio``
next to the repository, i.e. ``/work/shared/dev-audio``) and every setting,
prints per source the SDR of

* ``mixture``: the mixture itself as the estimate (the floor);
* ``oracle``: the oracle ratio mask of the same STFT (the ceiling of any
  masking method);
* ``best``: nmfcore's components grouped by the best grouping found with the
  references (oracle assignment; what the factorisation can deliver);
* ``auto``: nmfcore's automatic grouping (no references).

SDR is BSS Eval v3 SDR (fast_bss_eval or mir_eval) when installed, else
SI-SDR. Targets (issue 3), as a mean over all sources: best >= 6 dB with
rank <= 4 x sources, auto >= 3.5 dB.

Settings A-H use the Wiener-like masks (``mask_power=2``) and the default
features of ``auto_group``; I and J change one thing each on F: masks that
are the ratio of the component magnitudes (``mask_power=1``), then grouping
on the four drum/harmonic descriptors alone. All settings, the mask exponent
and the feature blocks included, were chosen on these same three mixtures.

Usage::

    python bench/separation.py            # all settings, a few minutes on 2 cores
    python bench/separation.py --quick    # two settings
    python bench/separation.py --json results.json --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmfcore.audio import (SeparationSettings, auto_group, best_grouping, bss_eval_backend, evaluate,  # noqa: E402
                           oracle_sources, separate)

from dev_audio import DEFAULT_DATA, load_items  # noqa: E402  (bench/dev_audio.py)


@dataclass(frozen=True)
class Config:
    key: str
    model: str
    beta: float
    mult: int  # rank = mult x number of sources
    n_fft: int = 2048
    hop: int = 512
    kernel: int = 1
    n_iter: int = 200
    mask_power: float = 2.0
    features: str = "descriptors+mfcc"  # feature blocks of auto_group
    continuity: float = 0.0  # temporal continuity of the activations (relative weight)

    def label(self) -> str:
        k = f" T={self.kernel}" if self.model != "NMF" else ""
        m = f" mask={self.mask_power:g}" if self.mask_power != 2.0 else ""
        f = f" auto={self.features}" if self.features != "descriptors+mfcc" else ""
        c = f" continuity={self.continuity:g}" if self.continuity else ""
        return (f"{self.model}{k} beta={self.beta:g} rank={self.mult}xS n_fft={self.n_fft} hop={self.hop} "
                f"iter={self.n_iter}{m}{f}{c}")

    def settings(self, n_sources: int) -> SeparationSettings:
        return SeparationSettings(model=self.model, rank=self.mult * n_sources, beta=self.beta, n_iter=self.n_iter,
                                  tol=0.0, kernel_size=self.kernel, n_fft=self.n_fft, hop_length=self.hop,
                                  mask_power=self.mask_power, continuity=self.continuity)


CONFIGS = [
    Config("A", "NMF", 1.0, 4),                                   # plain KL-NMF, the reference point
    Config("B", "NMF", 0.5, 4),
    Config("C", "NMF", 1.0, 2),
    Config("D", "NMF", 1.0, 4, n_fft=4096, hop=1024, n_iter=300),
    Config("E", "NMFD", 1.0, 4, kernel=6, n_iter=300),
    Config("F", "NMFD", 1.0, 4, n_fft=4096, hop=512, kernel=6, n_iter=300),
    Config("G", "NMFD", 1.0, 4, n_fft=4096, hop=1024, kernel=3, n_iter=300),
    Config("H", "NMF", 1.0, 8, n_fft=4096, hop=1024, n_iter=300),   # above the rank cap: capacity reference
    # F with magnitude-ratio masks (alpha = 1 on the KL model's magnitudes, cf. Liutkus and Badeau 2015)
    Config("I", "NMFD", 1.0, 4, n_fft=4096, hop=512, kernel=6, n_iter=300, mask_power=1.0),
    # I grouped on the four drum/harmonic descriptors of Helen and Virtanen 2005 alone (no MFCC block)
    Config("J", "NMFD", 1.0, 4, n_fft=4096, hop=512, kernel=6, n_iter=300, mask_power=1.0, features="descriptors"),
    # D with magnitude-ratio masks and temporal continuity of the activations (Virtanen 2007)
    Config("K", "NMF", 1.0, 4, n_fft=4096, hop=1024, n_iter=300, mask_power=1.0, continuity=0.1),
    # the defaults of SeparationSettings (and of the CLI and the app) with rank 4xS
    Config("L", "NMF", 1.0, 4, mask_power=1.0),
]
QUICK = ("A", "F")


def sdr(estimates, refs, names):
    res = evaluate(estimates, refs, names=names)
    key = "sdr" if "sdr" in res else "si_sdr"
    return res[key], res["si_sdr"]


def run(configs, items, out):
    metric = "BSS Eval SDR" if bss_eval_backend() else "SI-SDR (no BSS Eval backend installed)"
    print(f"metric: {metric}, dB; torch threads: {torch.get_num_threads()}", file=out)
    floor = {it["name"]: sdr(it["mix"][None].expand(len(it["names"]), -1, -1), it["refs"], it["names"])
             for it in items}
    oracle_cache: dict = {}
    results = []
    for cfg in configs:
        rows, fit_time = [], 0.0
        for it in items:
            S = len(it["names"])
            okey = (it["name"], cfg.n_fft, cfg.hop)
            if okey not in oracle_cache:
                est = oracle_sources(it["mix"], it["refs"], n_fft=cfg.n_fft, hop_length=cfg.hop)
                oracle_cache[okey] = sdr(est, it["refs"], it["names"])
            t = time.perf_counter()
            sep = separate(it["mix"], it["sr"], cfg.settings(S))
            fit_time += time.perf_counter() - t
            best = best_grouping(sep, it["refs"])
            auto = auto_group(sep, S, features=cfg.features)
            b, b_si = sdr(sep.sources(best), it["refs"], it["names"])
            a, a_si = sdr(sep.sources(auto), it["refs"], it["names"])
            for j, src in enumerate(it["names"]):
                rows.append({"item": it["name"], "source": src, "mixture": floor[it["name"]][0][j],
                             "oracle": oracle_cache[okey][0][j], "best": b[j], "auto": a[j],
                             "best_si_sdr": b_si[j], "auto_si_sdr": a_si[j]})
        means = {k: float(np.mean([r[k] for r in rows])) for k in ("mixture", "oracle", "best", "auto")}
        results.append({"config": cfg.key, "label": cfg.label(), "rows": rows, "mean": means,
                        "separate_s": fit_time})
        print(f"\n== {cfg.key}: {cfg.label()}   (separate: {fit_time:.1f} s for {len(items)} items)", file=out)
        print(f"{'item':<22}{'source':<9}{'mixture':>8}{'oracle':>8}{'best':>8}{'auto':>8}", file=out)
        for r in rows:
            print(f"{r['item']:<22}{r['source']:<9}{r['mixture']:8.2f}{r['oracle']:8.2f}{r['best']:8.2f}"
                  f"{r['auto']:8.2f}", file=out)
        print(f"{'mean (' + str(len(rows)) + ' sources)':<31}{means['mixture']:8.2f}{means['oracle']:8.2f}"
              f"{means['best']:8.2f}{means['auto']:8.2f}", file=out, flush=True)
    print("\n== summary: mean over all sources (targets: best >= 6 dB at rank <= 4xS, auto >= 3.5 dB)", file=out)
    print(f"{'':<3}{'setting':<96}{'mixture':>8}{'oracle':>8}{'best':>8}{'auto':>8}{'time s':>8}", file=out)
    for r in results:
        m = r["mean"]
        print(f"{r['config']:<3}{r['label']:<96}{m['mixture']:8.2f}{m['oracle']:8.2f}{m['best']:8.2f}"
              f"{m['auto']:8.2f}{r['separate_s']:8.1f}", file=out)
    return {"metric": metric, "threads": torch.get_num_threads(), "results": results}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of mixtures with stems")
    parser.add_argument("--quick", action="store_true", help=f"only settings {', '.join(QUICK)}")
    parser.add_argument("--configs", default=None, help="comma-separated setting keys, e.g. A,D,F")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", type=Path, default=None, help="write all numbers here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keys = args.configs.split(",") if args.configs else (QUICK if args.quick else [c.key for c in CONFIGS])
    configs = [c for c in CONFIGS if c.key in keys]
    if not configs:
        raise SystemExit(f"no settings among {keys}; known: {[c.key for c in CONFIGS]}")
    t = time.perf_counter()
    out = run(configs, load_items(args.data), sys.stdout)
    print(f"\ntotal {time.perf_counter() - t:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
