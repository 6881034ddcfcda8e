"""Guided separation (issue 17) with a simulated user, on the mixtures with stems of ``shared/dev-audio``.

The simulated user marks boxes of the spectrogram where one source clearly
dominates:

* magnitude STFTs of the stems and the mixture (n_fft 2048, hop 512);
* the plane is tiled into boxes of 0.5 s x one third of an octave (bands
  with edges 60 * 2**(i/3) Hz; the bins below 60 Hz form one band, the last
  band ends at sr / 2);
* a box is *clean* for source s when s holds at least 80% of the box's stem
  energy and the box's mixture energy is above the median box's;
* clean boxes are drawn at random (a seeded ``torch.Generator``), one source
  after the other in turn, until the marked boxes cover a fraction p of the
  plane's boxes (a source whose clean boxes run out is skipped);
* "wrong" runs give 10% of the marks (rounded, at least one) to another
  source drawn at random.

Every mark is a :class:`nmfcore.audio.Mark` of weight 1 (``--weight``
changes it). Reported: mean BSS Eval SDR (fast_bss_eval, the sources in the
order of the references: no permutation) and SI-SDR over all sources, for p
in {1, 2, 5, 10, 20}% with 3 seeds, beside the mixture itself, the blind
best grouping of 4 x S KL-NMF components (``best_grouping``, an oracle
assignment) and the oracle ratio mask (``oracle_sources``, mask exponent 1
on magnitudes like the separations'); then p = 5% with 10% wrong marks.
Guided and blind separations use the same settings: KL-NMF (beta 1),
rank 4 x S, n_fft 2048, hop 512, 200 iterations, ``mask_power=1``.

Targets (issue 17): at p = 5% mean SDR >= 7 dB; at p = 20% within 3 dB of
the oracle; wrong marks cost at most 1 dB. Also measured: the time of one
refinement (``refine``, one more mark) on every clip.

Usage::

    python bench/guided.py                 # the full table (about 15-20 minutes on one thread)
    python bench/guided.py --quick         # p = 5% and 20%, one seed, no wrong-mark runs
    python bench/guided.py --penalty 0     # the weighted model alone (Lefevre et al.)
    python bench/guided.py --json out.json

Selection runs (one seed on all eight mixtures at the p of interest, no
baselines)::

    python bench/guided.py --quick --wrong --p 5 --no-baselines --no-refine --mask-powers 1,2
    python bench/guided.py --quick --p 5 --no-baselines --no-refine --restarts 4
    python bench/guided.py --quick --wrong --p 5 --no-baselines --no-refine --screen 0.5

``--mask-powers`` renders each fit with several mask exponents;
``--restarts N`` keeps the lowest objective of N random starts; ``--screen
SHARE`` drops the marks whose source holds less than SHARE of the fitted
(unweighted) model's energy in the box and fits again from the same start.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmfcore.audio import (Mark, SeparationSettings, best_grouping, bss_eval, learn_dictionary,  # noqa: E402
                           oracle_sources, refine, separate, separate_guided, separate_supervised, si_sdr, stft)

from dev_audio import DEFAULT_DATA, load_items  # noqa: E402  (bench/dev_audio.py)

N_FFT, HOP = 2048, 512
BOX_SECONDS = 0.5
LOW_BAND_HZ = 60.0
CLEAN_SHARE = 0.8
PERCENTS = (1, 2, 5, 10, 20)
SEEDS = (0, 1, 2)
WRONG_SHARE = 0.1


def band_edges(sr: int) -> list[float]:
    """Edges in Hz: 0, 60, then a third of an octave each, the last one sr / 2."""
    edges = [0.0, LOW_BAND_HZ]
    while edges[-1] * 2 ** (1 / 3) < sr / 2:
        edges.append(edges[-1] * 2 ** (1 / 3))
    edges.append(sr / 2)
    return edges


def boxes(item) -> dict:
    """The tiling and, per box, the stems' energies and the mixture's energy."""
    sr = item["sr"]
    P = torch.stack([stft(r[0], n_fft=N_FFT, hop_length=HOP).abs().square() for r in item["refs"]]).double()
    M = stft(item["mix"][0], n_fft=N_FFT, hop_length=HOP).abs().square().double()
    F, T = M.shape
    freqs = np.arange(F) * sr / N_FFT
    times = np.arange(T) * HOP / sr
    edges = band_edges(sr)
    band = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, len(edges) - 2)
    slot = np.floor(times / BOX_SECONDS + 1e-9).astype(int)
    nb, nt = len(edges) - 1, int(slot.max()) + 1
    idx = torch.as_tensor(band[:, None] * nt + slot[None, :]).reshape(-1)
    E = torch.zeros(P.shape[0], nb * nt, dtype=torch.float64).index_add_(1, idx, P.reshape(P.shape[0], -1))
    Em = torch.zeros(nb * nt, dtype=torch.float64).index_add_(0, idx, M.reshape(-1))
    duration = item["mix"].shape[-1] / sr
    spans = [(edges[b], edges[b + 1], j * BOX_SECONDS, min((j + 1) * BOX_SECONDS, duration))
             for b in range(nb) for j in range(nt)]
    share = E / E.sum(0).clamp_min(1e-30)
    loud = Em > Em.median()
    clean = [torch.nonzero((share[s] >= CLEAN_SHARE) & loud)[:, 0].tolist() for s in range(P.shape[0])]
    return {"spans": spans, "clean": clean, "n_boxes": nb * nt}


def simulated_marks(tiles: dict, p: float, seed: int, wrong: float = 0.0) -> tuple[list[Mark], list[int]]:
    """Clean boxes drawn in turn per source until a fraction p of all boxes is marked; some given to a wrong
    source. Returns (marks, indices of the wrong marks)."""
    g = torch.Generator().manual_seed(seed)
    queues = [[c[i] for i in torch.randperm(len(c), generator=g).tolist()] for c in tiles["clean"]]
    S = len(queues)
    target = max(1, math.ceil(p * tiles["n_boxes"]))
    chosen: list[tuple[int, int]] = []
    s = 0
    while len(chosen) < target and any(queues):
        if queues[s]:
            chosen.append((s, queues[s].pop()))
        s = (s + 1) % S
    n_wrong = max(1, round(wrong * len(chosen))) if wrong > 0 else 0
    flip = set(torch.randperm(len(chosen), generator=g)[:n_wrong].tolist())
    marks = []
    for i, (src, box) in enumerate(chosen):
        if i in flip:
            others = [o for o in range(S) if o != src]
            src = others[int(torch.randint(len(others), (1,), generator=g))]
        f0, f1, t0, t1 = tiles["spans"][box]
        marks.append(Mark(src, t0, t1, f0, f1))
    return marks, sorted(flip)


def mark_support(sep, marks) -> list[float]:
    """Each mark's source's share of the unweighted model energy in its box (1 - that share for "absent")."""
    from nmfcore.audio.guided import _box

    W, H = sep.factors
    s = sep.settings
    out = []
    for m in marks:
        fb, tb = _box(m, sep.sr, s.n_fft, s.hop_length, W.shape[0], H.shape[0])
        energy = [float((W[fb, g[0]:g[-1] + 1] @ H[tb, g[0]:g[-1] + 1].t()).sum()) for g in sep.groups]
        share = energy[m.source] / sum(energy) if sum(energy) > 0 else 0.5
        out.append(1 - share if m.absent else share)
    return out


def scores(est: torch.Tensor, refs: torch.Tensor) -> tuple[list[float], list[float]]:
    res = bss_eval(est, refs)
    sdr = [float(x) for x in res["sdr"]] if res is not None else [float("nan")] * len(refs)
    return sdr, [si_sdr(est[j], refs[j]) for j in range(len(refs))]


PER_SOURCE = 4  # components per source (guided) and rank / S (blind)


def settings_for(S: int, seed: int = 0, per_source: int = PER_SOURCE) -> SeparationSettings:
    return SeparationSettings(model="NMF", rank=per_source * S, beta=1.0, n_iter=200, tol=0.0, n_fft=N_FFT, hop_length=HOP,
                              mask_power=1.0, seed=seed)


def with_mask_power(sep, power: float):
    """The same fit with the masks' exponent changed (the sources are rendered anew)."""
    other = copy.copy(sep)
    other.settings = dataclasses.replace(sep.settings, mask_power=power)
    other._components, other._cache = None, {}
    return other


def run(items, percents, seeds, wrong_runs: bool, penalty: float, weight: float, per_source: int, out,
        baselines: bool = True, refine_runs: bool = True, powers=(1.0,), restarts: int = 1,
        screen: float | None = None, templates=()) -> dict:
    print(f"torch threads: {torch.get_num_threads()}; penalty={penalty:g}, mark weight={weight:g}, "
          f"guided components per source: {per_source}, mask powers {list(powers)}, random starts {restarts}",
          file=out)
    rows = []  # one per (item, method, p, seed): the per-source scores
    refine_times = []
    for it in items:
        S, sr = len(it["names"]), it["sr"]
        t_item = time.perf_counter()
        tiles = boxes(it)
        base = {"item": it["name"], "names": it["names"]}
        if baselines:
            mix_sdr = scores(it["mix"][None].expand(S, -1, -1).contiguous(), it["refs"])
            rows.append({**base, "method": "mixture", "p": None, "seed": None, "sdr": mix_sdr[0], "si_sdr": mix_sdr[1]})
            ora = oracle_sources(it["mix"], it["refs"], n_fft=N_FFT, hop_length=HOP, mask_power=1.0)
            o = scores(ora, it["refs"])
            rows.append({**base, "method": "oracle", "p": None, "seed": None, "sdr": o[0], "si_sdr": o[1]})
            blind = separate(it["mix"], sr, settings_for(S))
            b = scores(blind.sources(best_grouping(blind, it["refs"])), it["refs"])
            rows.append({**base, "method": "blind best", "p": None, "seed": None, "sdr": b[0], "si_sdr": b[1]})
        for k in templates:  # the model's ceiling: k templates per source learnt from each stem alone
            dicts = [learn_dictionary(it["refs"][j], sr, settings_for(1, 0, k)) for j in range(S)]
            sup, groups = separate_supervised(it["mix"], sr, dicts, settings_for(S, 0, k), keep_components=False)
            t_ = scores(sup.sources(groups), it["refs"])
            rows.append({**base, "method": f"oracle templates {k}xS", "p": None, "seed": None, "sdr": t_[0],
                         "si_sdr": t_[1]})
        runs = [("guided", p, seed, 0.0) for p in percents for seed in seeds]
        if wrong_runs:
            runs += [("guided 10% wrong", 5, seed, WRONG_SHARE) for seed in seeds]
        for method, p, seed, wrong in runs:
            marks, flipped = simulated_marks(tiles, p / 100, seed, wrong)
            n_wrong = len(flipped)
            marks = [Mark(m.source, m.t0, m.t1, m.f0, m.f1, weight) for m in marks]
            t = time.perf_counter()
            sep = None
            for k in range(restarts):  # the lowest objective of several random starts (no reference needed)
                trial = separate_guided(it["mix"], sr, marks, settings_for(S, seed + 1000 * k, per_source),
                                        n_sources=S, penalty=penalty, keep_components=False)
                if sep is None or trial.objective < sep.objective:
                    sep = trial
            dropped = []
            if screen is not None:  # drop the marks the fit contradicts, fit again from the same start
                dropped = [i for i, v in enumerate(mark_support(sep, sep.marks)) if v < screen]
                if dropped:
                    kept = [m for i, m in enumerate(marks) if i not in dropped]
                    sep = separate_guided(it["mix"], sr, kept, settings_for(S, seed, per_source), n_sources=S,
                                          penalty=penalty, keep_components=False)
            fit_s = time.perf_counter() - t
            for power in powers:
                sc = scores(with_mask_power(sep, power).sources(), it["refs"])
                name = method if power == powers[0] else f"{method} mask^{power:g}"
                rows.append({**base, "method": name, "p": p, "seed": seed, "sdr": sc[0], "si_sdr": sc[1],
                             "n_marks": len(marks), "n_wrong": n_wrong, "separate_s": fit_s,
                             "n_dropped": len(dropped), "wrong_dropped": len(set(dropped) & set(flipped))})
            if refine_runs and method == "guided" and p == 5 and seed == seeds[0]:
                # one refinement as in an interactive loop: one more mark, refit from the factors, render
                # the sources; on two threads (the 2 cores)
                more, _ = simulated_marks(tiles, (p + 1) / 100, seed + 100)
                threads = torch.get_num_threads()
                torch.set_num_threads(2)
                t = time.perf_counter()
                again = refine(sep, marks + more[:1], keep_components=False)
                t_fit = time.perf_counter() - t
                again.sources()
                refine_times.append((it["mix"].shape[-1] / sr, t_fit, time.perf_counter() - t))
                torch.set_num_threads(threads)
        print(f"{it['name']}: {len(tiles['spans'])} boxes, clean per source {[len(c) for c in tiles['clean']]}, "
              f"{time.perf_counter() - t_item:.0f} s", file=out, flush=True)
    return {"rows": rows, "refine_s": refine_times}


def summarise(res: dict, percents, out):
    rows = res["rows"]

    def group(method, p=None):
        return [r for r in rows if r["method"] == method and (p is None or r["p"] == p)]

    def stats(rs, key):
        # mean over all sources of each seed, then mean and range over seeds; spread: per-mixture means
        seeds = sorted({r["seed"] for r in rs}, key=lambda x: -1 if x is None else x)
        per_seed = [np.mean([v for r in rs if r["seed"] == s for v in r[key]]) for s in seeds]
        items = sorted({r["item"] for r in rs})
        per_item = [np.mean([v for r in rs if r["item"] == i for v in r[key]]) for i in items]
        return float(np.mean(per_seed)), float(min(per_seed)), float(max(per_seed)), float(min(per_item)), \
            float(max(per_item))

    n_src = len({(r["item"], n) for r in rows for n in r["names"]})
    print(f"\nmean over {n_src} sources of {len({r['item'] for r in rows})} mixtures, dB "
          "(seeds: min-max of the seed means; mixtures: min-max of the per-mixture means)", file=out)
    print(f"{'method':<22}{'p':>5}{'marks':>7}{'SDR':>8}{'seeds':>14}{'mixtures':>16}{'SI-SDR':>8}", file=out)
    lines = list(dict.fromkeys((r["method"], r["p"]) for r in rows))  # in the order first met
    lines.sort(key=lambda mp: (mp[0].startswith("guided"), "wrong" in mp[0], mp[0], mp[1] or 0))
    table = {}
    for method, p in lines:
        rs = group(method, p)
        if not rs:
            continue
        m, lo, hi, ilo, ihi = stats(rs, "sdr")
        si = stats(rs, "si_sdr")[0]
        marks = np.mean([r["n_marks"] for r in rs]) if "n_marks" in rs[0] else float("nan")
        table[(method, p)] = m
        ps = "" if p is None else f"{p}%"
        mk = "" if np.isnan(marks) else f"{marks:.0f}"
        print(f"{method:<22}{ps:>5}{mk:>7}{m:8.2f}{f'{lo:.2f}..{hi:.2f}':>14}{f'{ilo:.2f}..{ihi:.2f}':>16}"
              f"{si:8.2f}", file=out)
    for method, p in lines:
        rs = [r for r in group(method, p) if "n_dropped" in r]
        if rs and any(r["n_dropped"] for r in rs):
            print(f"{method} {p}%: dropped {sum(r['n_dropped'] for r in rs)} marks in {len(rs)} runs, "
                  f"{sum(r['wrong_dropped'] for r in rs)} of them wrong (of {sum(r['n_wrong'] for r in rs)} wrong)",
                  file=out)
    if res["refine_s"]:
        r = np.array(res["refine_s"])
        print(f"\nrefine (one more mark, 50 iterations, 2 threads) on {len(r)} clips of {r[:, 0].min():.0f}-"
              f"{r[:, 0].max():.0f} s: fit median {np.median(r[:, 1]):.2f} s (max {r[:, 1].max():.2f}); fit and "
              f"render the sources median {np.median(r[:, 2]):.2f} s (max {r[:, 2].max():.2f})", file=out)
    print("\ntargets:", file=out)
    if ("guided", 5) in table:
        print(f"  p = 5%: mean SDR {table[('guided', 5)]:.2f} dB (target >= 7)", file=out)
    if ("guided", 20) in table and ("oracle", None) in table:
        gap = table[("oracle", None)] - table[("guided", 20)]
        print(f"  p = 20%: {gap:.2f} dB below the oracle (target <= 3)", file=out)
    if ("guided 10% wrong", 5) in table:
        cost = table[("guided", 5)] - table[("guided 10% wrong", 5)]
        print(f"  10% wrong marks at p = 5%: cost {cost:.2f} dB (target <= 1)", file=out)
    for (method, p), m in table.items():
        if method.startswith("guided 10% wrong mask^") and (method.replace(" 10% wrong", ""), 5) in table:
            cost = table[(method.replace(" 10% wrong", ""), 5)] - m
            print(f"  ({method[len('guided 10% wrong '):]}) 10% wrong marks at p = 5%: cost {cost:.2f} dB", file=out)
    print("\nper mixture, SDR (guided: mean over seeds):", file=out)
    items = sorted({r["item"] for r in rows})
    heads = lines
    def label(m):
        return m.replace("guided 10% wrong", "wrong").replace("guided ", "")

    print(f"{'mixture':<40}" + "".join(f"{(m if p is None else f'{label(m)} {p}%')[:13]:>14}"
                                       for m, p in heads), file=out)
    for i in items:
        vals = [np.mean([v for r in group(*h) if r["item"] == i for v in r["sdr"]]) for h in heads]
        print(f"{i:<40}" + "".join(f"{v:14.2f}" for v in vals), file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of mixtures with stems")
    parser.add_argument("--quick", action="store_true", help="p = 5%% and 20%%, one seed, no wrong-mark runs")
    parser.add_argument("--penalty", type=float, default=1.0, help="separate_guided's penalty (0: weights alone)")
    parser.add_argument("--weight", type=float, default=1.0, help="weight of every simulated mark")
    parser.add_argument("--per-source", type=int, default=PER_SOURCE, help="guided components per source")
    parser.add_argument("--items", default=None, help="comma-separated substrings of the mixtures to use")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--p", default=None, help="comma-separated percentages (default: 1,2,5,10,20; --quick: 5,20)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick: 0)")
    parser.add_argument("--wrong", action=argparse.BooleanOptionalAction, default=None,
                        help="also the runs at p = 5%% with 10%% wrong marks (default: not with --quick)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the mixture, oracle and blind rows")
    parser.add_argument("--no-refine", action="store_true", help="skip the timing of one refinement")
    parser.add_argument("--mask-powers", default="1", help="comma-separated mask exponents, each from the same fit")
    parser.add_argument("--restarts", type=int, default=1, help="keep the lowest objective of N random starts")
    parser.add_argument("--screen", type=float, default=None, metavar="SHARE",
                        help="drop the marks whose source has less than SHARE of the fitted model in the box, refit")
    parser.add_argument("--templates", default="", help="comma-separated k: also the row 'oracle templates kxS' "
                        "(k KL-NMF templates learnt from each stem, the activations fitted to the mixture)")
    parser.add_argument("--json", type=Path, default=None, help="write every score here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    items = load_items(args.data)
    if args.items:
        keys = args.items.split(",")
        items = [it for it in items if any(k in it["name"] for k in keys)]
    percents = tuple(int(x) for x in args.p.split(",")) if args.p else (5, 20) if args.quick else PERCENTS
    seeds = tuple(int(x) for x in args.seeds.split(",")) if args.seeds else SEEDS[:1] if args.quick else SEEDS
    wrong = (not args.quick) if args.wrong is None else args.wrong
    powers = tuple(float(x) for x in args.mask_powers.split(","))
    t = time.perf_counter()
    res = run(items, percents, seeds, wrong, args.penalty, args.weight, args.per_source, sys.stdout,
              baselines=not args.no_baselines, refine_runs=not args.no_refine, powers=powers, restarts=args.restarts,
              screen=args.screen, templates=[int(k) for k in args.templates.split(",") if k])
    summarise(res, percents, sys.stdout)
    print(f"\ntotal {time.perf_counter() - t:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
