"""The ``nmfcore`` command line: separate recordings, score separations, show the setup.

Examples
--------
Separate a song into three sources with NMFD and keep every component::

    nmfcore separate song.wav -o stems --model NMFD --rank 12 --kernel 6 --sources 3 --components

Separate a long recording block by block (files over ``--long-file`` seconds
take this path by themselves), with a mini-batch solver::

    nmfcore separate concert.flac -o stems --solver asg_mu --batch-size 2048 --long-file 0

Score estimated stems against references (files or folders)::

    nmfcore evaluate -e stems/song -r refs/song

Mistakes in the input (a missing file, a bad option value, audio that
cannot be used) print one line ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from time import perf_counter
from typing import Optional, Sequence

from .exceptions import NMFCoreError

__all__ = ["main", "build_parser", "parse_groups"]

EXIT_USAGE = 2
#: default of ``--long-file``: inputs longer than this many seconds are separated block by block (10 minutes: the
#: in-memory path's peak grows with the length, 1.0 GB for 20 minutes of 22.05 kHz mono, while the block-by-block
#: one stays near 0.5 GB but reads the file twice per epoch; bench/README.md)
LONG_FILE_S = 600.0
# the solvers of a separation (nmfcore.audio.settings.SOLVER_CHOICES; spelled here so --help imports no torch)
SOLVER_CHOICES = ("full", "mu_batch", "asg_mu", "gsg_mu", "asag_mu", "gsag_mu")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: ...``) and exit status 2."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


class _UsageError(Exception):
    pass


def parse_groups(text: str, n_components: Optional[int] = None) -> list[list[int]]:
    """Parse ``'0,1;2-4;5'`` into ``[[0, 1], [2, 3, 4], [5]]`` (groups by ';', indices or ranges by ',').

    Every group and every item must be non-empty; with ``n_components``
    every index and range end is checked to lie below it *before* a range
    is expanded (``0-1000000000`` is refused, not built).

    Examples
    --------
    >>> parse_groups("0,1;2-4;5")
    [[0, 1], [2, 3, 4], [5]]
    """
    groups = []
    parts = str(text).split(";")
    for k, part in enumerate(parts):
        members = []
        items = [p.strip() for p in part.split(",")]
        if not any(items):
            raise _UsageError(f"--groups {text!r}: group {k + 1} of {len(parts)} ({part.strip()!r}) is empty; "
                              "separate groups by ';' and components by ','")
        for item in items:
            if not item:
                raise _UsageError(f"--groups {text!r}: group {k + 1} ({part.strip()!r}) has an empty item "
                                  "between commas")
            try:
                if "-" in item:
                    lo, hi = (int(v) for v in item.split("-", 1))
                    if hi < lo or lo < 0:
                        raise ValueError
                    ends = (lo, hi)
                else:
                    lo = hi = int(item)
                    if lo < 0:
                        raise ValueError
                    ends = (lo,)
            except ValueError:
                raise _UsageError(f"--groups {text!r}: {item!r} is not a component index or range like 2-5") from None
            if n_components is not None and max(ends) >= n_components:
                raise _UsageError(f"--groups {text!r}: {item!r} is beyond the last component "
                                  f"{n_components - 1} (--rank {n_components})")
            members.extend(range(lo, hi + 1))
        groups.append(members)
    return groups


def _kernel(text: str):
    try:
        parts = [int(v) for v in str(text).lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a kernel size such as 6 or 16x4") from None
    return parts[0] if len(parts) == 1 else tuple(parts)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="nmfcore", description="Audio source separation with non-negative matrix factorisation.")
    parser.add_argument("--version", action="version", version=f"nmfcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{separate,evaluate,info}", parser_class=_Parser)

    sep = sub.add_parser("separate", help="separate recordings into sources (and components)",
                         description="Factorise each recording's spectrogram and write one file per source, "
                                     "optionally one per component, and a JSON summary.")
    sep.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files (wav, flac, ogg, mp3, ...)")
    sep.add_argument("-o", "--output", required=True, metavar="DIR",
                     help="output folder; each input gets a sub-folder named after it")
    g = sep.add_argument_group("model")
    g.add_argument("--model", default="NMF", help="NMF, NMFD, NMF2D, PLCA, SIPLCA or SIPLCA2 (default NMF); "
                                                  "the PLCA models are fitted by EM (no --beta); SIPLCA2 "
                                                  "works on a log-frequency spectrogram")
    g.add_argument("--rank", type=int, default=8, help="number of components (default 8)")
    g.add_argument("--beta", type=float, default=1.0, help="beta-divergence: 2 Euclidean, 1 KL, 0 IS (default 1)")
    g.add_argument("--iter", dest="n_iter", type=int, default=200, help="maximum iterations (default 200)")
    g.add_argument("--tol", type=float, default=1e-4, help="stopping tolerance, 0 runs all iterations")
    g.add_argument("--kernel", type=_kernel, default=1,
                   help="NMFD/SIPLCA pattern length in frames (e.g. 6) or NMF2D/SIPLCA2 patch FxT (e.g. "
                        "16x4; SIPLCA2 counts log-frequency bins, 24 per octave: 190x4 at --n-fft 2048 "
                        "gives 13 pitch shifts)")
    g.add_argument("--init", default="nndsvda", help="nndsvda, nndsvd, nndsvdar or random (default nndsvda)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--sparsity", type=float, default=None, metavar="S",
                   help="target Hoyer sparseness of the activations, in (0, 1)")
    g.add_argument("--continuity", type=float, default=0.0, metavar="C",
                   help="weight of the temporal continuity of the activations, relative to the data "
                        "(NMF, NMFD; default 0: none)")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    g.add_argument("--solver", default="full", choices=SOLVER_CHOICES,
                   help="full: the model's fit of the whole spectrogram at every iteration (default); or a "
                        "mini-batch solver of NMF (--model NMF, no --sparsity or --continuity) over batches of "
                        "--batch-size frames, --iter then counting epochs: mu_batch (full-batch MU computed batch "
                        "by batch), asg_mu, gsg_mu, asag_mu, gsag_mu (stochastic)")
    g.add_argument("--batch-size", type=int, default=1024, metavar="N",
                   help="frames per batch of the mini-batch solvers, and per block read from a long file "
                        "(default 1024)")
    g.add_argument("--long-file", type=float, default=LONG_FILE_S, metavar="SECONDS",
                   help="inputs (that libsndfile reads: wav, flac, ogg, mp3, ...) longer than this are read, "
                        "fitted and written block by block, never held in memory whole: NMF by a mini-batch "
                        "solver (--solver full means mu_batch there), no "
                        f"--marks, no --sr resampling (default {LONG_FILE_S:g}: 10 minutes; 0: every input)")
    g = sep.add_argument_group("spectrogram and masks")
    g.add_argument("--sr", type=int, default=None, help="resample to this rate first (default: keep)")
    g.add_argument("--n-fft", type=int, default=2048, help="FFT size (default 2048)")
    g.add_argument("--hop", type=int, default=512, help="hop length (default 512)")
    g.add_argument("--window", default="hann", help="hann, hamming, blackman, bartlett or rect")
    g.add_argument("--power", type=float, default=1.0, help="1 magnitude, 2 power spectrogram (default 1)")
    g.add_argument("--mask-power", type=float, default=1.0,
                   help="soft-mask exponent (default 1: magnitude ratios; 2 is Wiener-like)")
    g = sep.add_argument_group("sources and output")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--sources", type=int, default=None, metavar="N",
                     help="group the components automatically into N sources (default 2)")
    how.add_argument("--groups", default=None, metavar="SPEC",
                     help="explicit groups of component indices, e.g. '0,1;2-5' (components in no group are "
                          "written as 'residual')")
    g.add_argument("--marks", default=None, metavar="FILE",
                   help="guided separation: a JSON file of marks saying where each source sounds, "
                        '{"marks": [{"source": 0, "t0": 0.5, "t1": 2.0, "f0": 0, "f1": null, "weight": 1.0, '
                        '"absent": false}, ...]} (seconds, Hz, sources from 0 to --sources - 1; f0, f1, weight '
                        "and absent optional: whole band, certain, 'only this source here'; a region of any "
                        'shape: {"source": 1, "polygon": [[t, f], [t, f], [t, f], ...]} in place of the box); '
                        "model NMF only")
    g.add_argument("--features", default="descriptors+mfcc", metavar="BLOCKS",
                   help="features of the automatic grouping (--sources), blocks joined by '+': descriptors, "
                        "mfcc, activation (default descriptors+mfcc)")
    g.add_argument("--names", default=None, help="comma-separated source names for the files")
    g.add_argument("--components", action="store_true", help="also write every component's waveform")
    g.add_argument("--format", choices=("wav", "flac"), default="wav", help="output format (default wav)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's folder (as a whole) for the same input")
    g.add_argument("--max-duration", type=float, default=None, metavar="SECONDS", help="refuse longer inputs")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="score estimated sources against reference stems",
                        description="SI-SDR (and BSS Eval SDR/SIR/SAR when fast_bss_eval or mir_eval is "
                                    "installed) of every reference's best-matching estimate.")
    ev.add_argument("-e", "--estimates", nargs="+", required=True, metavar="PATH",
                    help="estimate files, or folders of them")
    ev.add_argument("-r", "--references", nargs="+", required=True, metavar="PATH",
                    help="reference files, or folders of them")
    ev.add_argument("--json", default=None, metavar="FILE", help="also write the scores as JSON")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    ev.add_argument("--no-bss", action="store_true", help="SI-SDR only (faster)")

    sub.add_parser("info", help="versions, devices and formats", description="Show versions, devices, "
                                                                                "audio formats and models.")
    return parser


# ---------------------------------------------------------------- helpers
def _finite(x):
    """JSON-safe: non-finite floats become None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _write_json(path: Path, data: dict, overwrite: bool):
    from .audio.io import OutputExistsError

    try:
        with open(path, "w" if overwrite else "x", encoding="utf-8") as fh:
            json.dump(_finite(data), fh, indent=2)
            fh.write("\n")
    except FileExistsError:
        raise OutputExistsError(f"'{path}' exists already: pass --overwrite to replace it") from None


def _settings_from_args(args):
    from .audio import SeparationSettings

    return SeparationSettings(model=args.model, rank=args.rank, beta=args.beta, n_iter=args.n_iter, tol=args.tol,
                              kernel_size=args.kernel, init=None if args.init == "none" else args.init,
                              seed=args.seed, sparsity_H=args.sparsity, continuity=args.continuity,
                              n_fft=args.n_fft, hop_length=args.hop,
                              window=args.window, power=args.power, mask_power=args.mask_power, sr=args.sr,
                              device=args.device, solver=args.solver, batch_size=args.batch_size)


def _source_names(args, n: int) -> list[str]:
    from .audio import AudioError, safe_filename

    if args.names is None:
        return [f"source{j + 1}" for j in range(n)]
    names = [safe_filename(v.strip(), default="") for v in args.names.split(",")]
    if len(names) != n or not all(names):
        raise AudioError(f"--names {args.names!r} must give {n} non-empty names, one per source")
    if len(set(names)) != n or "residual" in names:
        raise AudioError(f"--names {args.names!r} must be distinct and not 'residual'")
    return names


def _plan_outputs(folder: Path, names, n_components: Optional[int], args) -> dict:
    """Every output path of one run, inside its run folder ``folder``."""
    ext = "." + args.format
    files = {"sources": [folder / (n + ext) for n in names], "components": [],
             "summary": folder / "summary.json"}
    if args.groups is not None:
        files["residual"] = folder / ("residual" + ext)
    if n_components:
        files["components"] = [folder / "components" / f"component{r:02d}{ext}" for r in range(n_components)]
    return files


def _all_paths(files: dict):
    for value in files.values():
        yield from (value if isinstance(value, list) else [value])


def _check_run_folder(final: Path, overwrite: bool):
    """A run goes to ``final``: refuse an existing one without --overwrite, and never replace a
    folder that is not an nmfcore run (one without ``summary.json`` that holds anything)."""
    from .audio import AudioError, OutputExistsError

    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise AudioError(f"'{final}' exists and is not a folder: remove it or choose another --output")
    if not final.exists():
        return
    if not overwrite:
        raise OutputExistsError(f"'{final}' exists already: pass --overwrite to replace it")
    if any(final.iterdir()) and not (final / "summary.json").is_file():
        raise AudioError(f"'{final}' is not the folder of an earlier nmfcore run (no summary.json): "
                         "remove it yourself or choose another --output")


def _check_writable(root: Path):
    """Create ``root`` and write a file in it, before any fit."""
    import tempfile

    from .audio import AudioError

    if root.exists() and not root.is_dir():
        raise AudioError(f"--output '{root}' exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root) as fh:
            fh.write(b"nmfcore")
    except OSError as exc:
        raise AudioError(f"--output '{root}' cannot be created or written: {exc.strerror or exc}") from None


def _commit_run(tmp: Path, final: Path, overwrite: bool):
    """Move the complete run ``tmp`` to ``final``, replacing an earlier run there as a whole."""
    import os
    import shutil
    import tempfile

    from .audio import OutputExistsError

    if not final.exists():
        os.rename(tmp, final)
        return
    if not overwrite:
        raise OutputExistsError(f"'{final}' exists already: pass --overwrite to replace it")
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.rename(final, old / "run")
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _rank_limit(settings, n_samples: int, sr: int) -> int:
    """The largest rank the spectrogram supports: min(frequency bins, frames)."""
    from .audio.spectral import n_frames

    rate = settings.sr or sr
    samples = math.ceil(n_samples * rate / sr)
    return min(settings.n_fft // 2 + 1, n_frames(samples, settings.hop_length))


def _separate_one(path: Path, root: Path, folder: str, args, settings, groups, names, out, err) -> dict:
    import shutil
    import tempfile

    from tqdm.auto import tqdm

    from . import __version__
    from .audio import (AudioError, auto_group, component_centroids, component_order, component_pitches,
                        load_audio, note_names, output_path, separate)
    from .audio.grouping import describe_sources
    from .audio.guided import separate_marked
    from .audio.longfile import audio_duration, separate_file

    final = output_path(root, folder)
    _check_run_folder(final, args.overwrite)
    files = _plan_outputs(final, names, settings.rank if args.components else None, args)

    t0 = perf_counter()
    duration = audio_duration(path) if path.is_file() else None
    long = duration is not None and duration > args.long_file
    if long:  # block by block: nothing is loaded now
        if args.max_duration is not None and duration > args.max_duration:
            raise AudioError(f"'{path}' is {duration:.1f} s long, more than max_duration={args.max_duration:g} s")
        settings = _long_file_settings(path, duration, args, settings, err)
        n_samples, sr = _header(path)
    else:
        y, sr = load_audio(path, max_duration=args.max_duration)
        n_samples = y.shape[-1]
    t_load = perf_counter() - t0
    limit = _rank_limit(settings, n_samples, sr)
    if settings.rank > limit:
        raise AudioError(f"--rank {settings.rank} is more than the spectrogram supports: at most {limit} "
                         f"(min of {settings.n_fft // 2 + 1} frequency bins and the frames of this "
                         f"{n_samples / sr:.2f} s input at --hop {settings.hop_length})")
    bars = []  # made at the first report, so errors before the fit print no bar

    def progress(iteration, loss):
        if not bars:
            bars.append(tqdm(total=settings.n_iter, desc=path.name[:30], leave=False, disable=args.quiet, file=out,
                             unit="epoch" if settings.minibatch else "it"))
        bars[0].update(iteration - bars[0].n)
        bars[0].set_postfix(loss=f"{loss:.4g}", refresh=False)

    grouping = "manual" if groups is not None else "auto"
    try:
        if long:
            sep = separate_file(path, settings, callback=progress)
        elif args.marks is not None:  # guided separation (nmfcore.audio.guided): the marks decide the groups
            sep = separate_marked(y, sr, args.marks, settings, len(names), groups=groups, callback=progress)
            groups, grouping = sep.groups, "marks"
        else:
            sep = separate(y, sr, settings, callback=progress, keep_components=False)  # rendered as written
    finally:
        for bar in bars:
            bar.close()
    if groups is None:
        groups = auto_group(sep, len(names), seed=settings.seed, features=args.features)
    peak = sep.input_peak if long else float(sep.mixture.abs().max())
    n_samples = sep.n_samples if long else sep.mixture.shape[-1]
    t = perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.partial-", dir=root))
    try:
        moved = {k: ([tmp / p.relative_to(final) for p in v] if isinstance(v, list) else tmp / v.relative_to(final))
                 for k, v in files.items()}
        output = _write_outputs(sep, groups, moved, tmp, args.format, peak)
        if output["note"]:
            print(f"warning: {path}: {output['note']}", file=err)
        timings = {"load": t_load, **sep.timings, "write": perf_counter() - t}
        pitches = component_pitches(sep)
        described = describe_sources(sep, groups)
        summary = {
            "nmfcore_version": __version__, "input": str(path), "output_folder": str(final),
            "settings": settings.to_dict(), "sample_rate": sep.sr, "channels": sep.n_channels,
            "duration_s": n_samples / sep.sr, "long_file": long, "n_iter": sep.n_iter,
            "iteration_unit": "epoch" if settings.minibatch else "iteration",
            "final_loss": sep.losses[-1][1] if sep.losses else None, "losses": [list(p) for p in sep.losses],
            "timings_s": timings, "grouping": grouping, "grouping_features": args.features if grouping == "auto"
            else None, "source_names": names, "groups": groups,
            "sources": [{"name": n, **d} for n, d in zip(names, described)],
            "input_peak": peak, "output_subtype": output["subtype"], "output_gain": output["gain"],
            "component_order": component_order(sep),
            "component_centroids_hz": [float(c) for c in component_centroids(sep)],
            "component_order_by_pitch": component_order(sep, by="pitch"),
            "component_pitches_hz": [float(p) for p in pitches],  # null: unpitched or silent
            "component_notes": note_names(pitches),
            "files": {k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in files.items()},
        }
        _write_json(moved["summary"], summary, False)
        _commit_run(tmp, final, args.overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no partial run is ever left (disk full, Ctrl-C, SIGTERM)
        raise
    return summary


def _header(path: Path) -> tuple[int, int]:
    """``(samples, sample rate)`` of an audio file from its header."""
    import soundfile as sf

    info = sf.info(str(path))
    return int(info.frames), int(info.samplerate)


def _long_file_settings(path: Path, duration: float, args, settings, err):
    """The settings of the block-by-block path for an input longer than ``--long-file``, after refusing
    what it cannot do (by the options' names); says on stderr that the input takes it."""
    from .audio import AudioError

    why = f"it is {duration:.1f} s long, more than --long-file {args.long_file:g} s, so it is separated block by block"
    if settings.model != "NMF":
        raise AudioError(f"{why}: only --model NMF is fitted that way (mini-batch solvers), not --model "
                         f"{settings.model}; use --model NMF or raise --long-file")
    if args.marks is not None:
        raise AudioError(f"{why}: --marks (guided separation) needs the whole spectrogram; drop --marks or "
                         "raise --long-file")
    for option, value in (("--sparsity", settings.sparsity_H), ("--continuity", settings.continuity or None)):
        if value is not None:
            raise AudioError(f"{why}: {option} is not available to the mini-batch solvers; drop it or raise "
                             "--long-file")
    _, rate = _header(path)
    if settings.sr is not None and settings.sr != rate:
        raise AudioError(f"{why}: resampling to --sr {settings.sr} is not done block by block (the file is at "
                         f"{rate} Hz); resample the file first, drop --sr or raise --long-file")
    if not settings.minibatch:
        settings = settings.replace(solver="mu_batch")
    print(f"note: {path}: {why}: NMF by the mini-batch solver {settings.solver}, {settings.batch_size} frames per "
          f"block, --iter {settings.n_iter} epochs", file=err)
    return settings


def _output_peak(sep, groups, components: bool) -> float:
    """Largest absolute sample of every output (sources, residual, components): one rendering pass."""
    peak = 0.0
    for start, chunk, comp_chunk in sep.source_blocks(groups, components=components):
        peak = max(peak, float(chunk.abs().max()))
        residual = sep.mixture_samples(start, start + chunk.shape[-1]) - chunk.sum(0)
        peak = max(peak, float(residual.abs().max()))
        if comp_chunk is not None:
            peak = max(peak, float(comp_chunk.abs().max()))
    return peak


def _write_outputs(sep, groups, files: dict, folder: Path, fmt: str, input_peak: float) -> dict:
    """Write the sources, the residual and the components (where planned) block by block of frames.

    The waveforms are rendered (:meth:`~nmfcore.audio.Separation.source_blocks`)
    and written as they come, so the whole stems are never held in memory.
    Input above full scale is never clipped: WAV outputs are then 32-bit
    float; FLAC (integer only) outputs are all scaled by one gain that
    brings the loudest output to full scale. Returns the subtype, the gain
    and a note for the user (empty when nothing was changed).
    """
    from contextlib import ExitStack

    from .audio import AudioWriter

    subtype, gain, note = "PCM_16", 1.0, ""
    if input_peak > 1.0:
        if fmt == "wav":
            subtype = "FLOAT"
            note = (f"the input peaks at {input_peak:.3g}, above full scale: the outputs are 32-bit float WAV "
                    "(not clipped; they sum to the input)")
        else:
            out_peak = _output_peak(sep, groups, bool(files["components"]))
            gain = 1.0 / out_peak if out_peak > 1.0 else 1.0
            note = (f"the input peaks at {input_peak:.3g}, above full scale: every output is scaled by one "
                    f"gain {gain:.6g} (output_gain in summary.json), so they still sum to the scaled input")
    folder.mkdir(parents=True, exist_ok=True)
    if files["components"]:
        files["components"][0].parent.mkdir(exist_ok=True)
    with ExitStack() as stack:
        def writer(path):
            return stack.enter_context(AudioWriter(path, sep.sr, sep.n_channels, subtype=subtype))

        sources = [writer(p) for p in files["sources"]]
        residual = writer(files["residual"]) if "residual" in files else None
        components = [writer(p) for p in files["components"]]
        for start, chunk, comp_chunk in sep.source_blocks(groups, components=bool(components)):
            for w, wave in zip(sources, chunk):
                w.write(wave * gain if gain != 1.0 else wave)
            if residual is not None:
                res = sep.mixture_samples(start, start + chunk.shape[-1]) - chunk.sum(0)
                residual.write(res * gain if gain != 1.0 else res)
            for w, wave in zip(components, comp_chunk if components else ()):
                w.write(wave * gain if gain != 1.0 else wave)
    return {"subtype": subtype, "gain": gain, "note": note}


def _one_line_sources(summary: dict) -> str:
    """``name: components 0,3 (pitched, centroid 180 Hz, A2)`` for every source, joined by '; '."""
    parts = []
    for src in summary["sources"]:
        comps = ",".join(str(r) for r in src["components"]) or "none"
        parts.append(f"{src['name']}: components {comps} ({src['sound']})")
    return "; ".join(parts)


def _cmd_separate(args, out, err) -> int:
    from .audio import check_groups, safe_filename
    from .audio.grouping import FEATURE_BLOCKS
    from .audio.separation import check_device

    if args.batch_size < 1:
        raise _UsageError(f"--batch-size {args.batch_size} must be at least 1 (frames per batch)")
    if not args.long_file >= 0:
        raise _UsageError(f"--long-file {args.long_file:g} must be a number of seconds >= 0")
    if args.solver != "full":
        clash = [opt for opt, on in ((f"--model {args.model}", args.model != "NMF"),
                                     ("--sparsity", args.sparsity is not None), ("--continuity", args.continuity != 0),
                                     ("--marks", args.marks is not None))
                 if on]
        if clash:
            raise _UsageError(f"--solver {args.solver} is a mini-batch solver of NMF: not with {', '.join(clash)} "
                              "(use --solver full)")
    settings = _settings_from_args(args)
    if settings.model == "NMF" and args.kernel != 1:
        raise _UsageError(f"--kernel {args.kernel} has no effect with --model NMF (it is the pattern length "
                          "of NMFD or the patch of NMF2D): drop it or choose --model NMFD or NMF2D")
    bins = settings.n_fft // 2 + 1
    if settings.rank > bins:
        raise _UsageError(f"--rank {settings.rank} is more than the spectrogram supports: at most {bins} "
                          f"(the frequency bins of --n-fft {settings.n_fft}), fewer for short inputs")
    blocks = str(args.features).split("+")
    if not all(b in FEATURE_BLOCKS for b in blocks) or len(set(blocks)) != len(blocks):
        raise _UsageError(f"--features {args.features!r} must be blocks of {', '.join(FEATURE_BLOCKS)} "
                          "joined by '+', each at most once")
    check_device(settings.device)
    groups = parse_groups(args.groups, settings.rank) if args.groups is not None else None
    n_sources = len(groups) if groups is not None else (2 if args.sources is None else args.sources)
    if groups is not None:
        check_groups(groups, settings.rank)
    elif not 1 <= n_sources <= settings.rank:
        raise _UsageError(f"--sources {n_sources} must lie in [1, --rank {settings.rank}]")
    names = _source_names(args, n_sources)
    root = Path(args.output)
    _check_writable(root)  # before any fit
    used, failed = set(), 0
    for name in args.inputs:
        path = Path(name)
        folder = safe_filename(path.stem)
        base, k = folder, 2
        while folder in used:
            folder, k = f"{base}-{k}", k + 1
        used.add(folder)
        try:
            summary = _separate_one(path, root, folder, args, settings, groups, names, out, err)
        except (NMFCoreError, OSError) as exc:
            print(f"error: {path}: {_message(exc)}", file=err)
            failed += 1
            continue
        t = summary["timings_s"]
        print(f"{path}: {summary['n_iter']} {summary['iteration_unit']}s in {t.get('fit', 0):.2f} s, "
              f"{len(summary['files']['sources'])} sources -> {summary['output_folder']} "
              f"[{_one_line_sources(summary)}]", file=out)
    return EXIT_USAGE if failed else 0


MIXTURE_STEMS = ("mix", "mixture")


def _audio_files(paths: Sequence[str], what: str, err=None) -> list[Path]:
    """Audio files of the given files and folders. In a folder of references the mixture is never
    a reference: where a ``meta.json`` lists the ``sources`` (the layout of ``shared/dev-audio``)
    exactly those stems are taken, else every file but ``mix.*`` / ``mixture.*``."""
    from .audio import AudioError

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
            if what == "references":
                found = _reference_stems(p, found, err)
            if not found:
                raise AudioError(f"{what} folder '{p}' contains no audio files")
            files.extend(found)
        else:
            files.append(p)
    return files


def _reference_stems(folder: Path, found: list[Path], err) -> list[Path]:
    from .audio import AudioError

    meta = folder / "meta.json"
    sources = None
    if meta.is_file():
        try:
            sources = json.loads(meta.read_text(encoding="utf-8")).get("sources")
        except (ValueError, OSError, AttributeError):
            sources = None
    if isinstance(sources, list) and sources and all(isinstance(n, str) for n in sources):
        by_stem = {f.stem: f for f in found}
        missing = [n for n in sources if n not in by_stem]
        if missing:
            raise AudioError(f"references folder '{folder}': meta.json lists sources {missing} without a file")
        skipped = [f.name for f in found if f.stem not in sources]
        if skipped and err is not None:
            print(f"note: {folder}: references are the sources of meta.json; not scored: {', '.join(skipped)}",
                  file=err)
        return [by_stem[n] for n in sources]
    mixtures = [f for f in found if f.stem.lower() in MIXTURE_STEMS]
    if mixtures and err is not None:
        print(f"note: {folder}: {', '.join(f.name for f in mixtures)} is the mixture, not a reference",
              file=err)
    return [f for f in found if f.stem.lower() not in MIXTURE_STEMS]


def _score(v: float) -> str:
    """A score for the table: 2 decimals, or +inf / -inf / nan spelled out."""
    if math.isfinite(v):
        return f"{v:9.2f}"
    return f"{'nan' if v != v else ('+inf' if v > 0 else '-inf'):>9}"


def _load_stack(files: list[Path], sr: Optional[int]):
    import torch

    from .audio import load_audio

    waves = []
    for f in files:
        y, rate = load_audio(f, sr=sr)
        sr = rate if sr is None else sr
        waves.append(y)
    n_ch = {w.shape[0] for w in waves}
    if len(n_ch) > 1:
        waves = [w.mean(0, keepdim=True) for w in waves]
    n = min(w.shape[-1] for w in waves)
    return torch.stack([w[:, :n] for w in waves]), sr, max(w.shape[-1] for w in waves) - n


def _cmd_evaluate(args, out, err) -> int:
    from .audio import evaluate

    ref_files = _audio_files(args.references, "references", err)
    est_files = _audio_files(args.estimates, "estimates", err)
    refs, sr, cut_r = _load_stack(ref_files, None)
    ests, _, cut_e = _load_stack(est_files, sr)
    if refs.shape[1] != ests.shape[1]:
        refs, ests = refs.mean(1, keepdim=True), ests.mean(1, keepdim=True)
        print("note: estimates and references have different channel counts; both mixed to mono", file=err)
    n = min(refs.shape[-1], ests.shape[-1])
    if max(cut_r, cut_e, refs.shape[-1] - n, ests.shape[-1] - n) > 0.01 * sr:
        print(f"note: signals differ in length; all cut to the shortest ({n / sr:.2f} s)", file=err)
    refs, ests = refs[..., :n], ests[..., :n]
    res = evaluate(ests, refs, names=[f.stem for f in ref_files], bss=not args.no_bss)
    metrics = [k for k in ("si_sdr", "sdr", "sir", "sar") if k in res]
    width = max(len(n) for n in res["names"] + ["reference"])
    est_width = max([len(f.name) for f in est_files] + [8])
    header = f"{'reference':<{width}}  {'estimate':<{est_width}}" + "".join(f"{m.upper().replace('_', '-'):>9}"
                                                                           for m in metrics)
    print(header, file=out)
    for j, name in enumerate(res["names"]):
        i = res["permutation"][j]
        est = est_files[i].name if i >= 0 else "-"
        scores = "".join(_score(res[m][j]) for m in metrics) if i >= 0 else "  (no estimate left: unmatched)"
        print(f"{name:<{width}}  {est:<{est_width}}" + scores, file=out)
    matched = len(res["names"]) - len(res["unmatched"])
    of = f"{matched} of {len(res['names'])}"
    print(f"{'mean':<{width}}  {of:<{est_width}}" + "".join(_score(res["mean"][m]) for m in metrics), file=out)
    if res["unmatched"]:
        print(f"note: {len(res['unmatched'])} reference(s) without an estimate, not in the mean: "
              f"{', '.join(res['unmatched'])}", file=err)
    for name, metric, value in res["non_finite"]:
        why = ("the estimate is silent" if value < 0 else "a perfect estimate") if value == value \
            else "undefined (a silent reference or estimate)"
        print(f"note: {name}: {metric.upper().replace('_', '-')} is {_score(value).strip()} ({why}); "
              "the mean includes it", file=err)
    if res["backend"] is None and not args.no_bss:
        print("note: install fast_bss_eval (pip install nmfcore[eval]) for SDR/SIR/SAR", file=err)
    if args.json:
        res["estimates"] = [str(f) for f in est_files]
        res["references"] = [str(f) for f in ref_files]
        _write_json(Path(args.json), _spelled(res), args.overwrite)
    return 0


def _spelled(x):
    """JSON-safe scores: infinities and NaN as the strings 'inf', '-inf', 'nan' (never dropped)."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _spelled(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_spelled(v) for v in x]
    return x


def _cmd_info(args, out, err) -> int:
    import platform

    import numpy
    import soundfile
    import torch

    from . import __version__
    from .audio import MODELS, bss_eval_backend

    lines = [f"nmfcore {__version__}", f"python {platform.python_version()} ({platform.platform()})",
             f"torch {torch.__version__}, numpy {numpy.__version__}",
             f"soundfile {soundfile.__version__} (libsndfile {soundfile.__libsndfile_version__})"]
    try:
        import librosa

        lines.append(f"librosa {librosa.__version__}")
    except ImportError:
        lines.append("librosa not installed")
    lines.append(f"BSS Eval backend: {bss_eval_backend() or 'none (pip install nmfcore[eval])'}")
    lines.append(f"cpu: {torch.get_num_threads()} torch threads")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {p.name}, {p.total_memory / 2 ** 30:.1f} GiB")
    else:
        lines.append("cuda: not available")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        lines.append("mps: available")
    lines.append("read formats: " + ", ".join(sorted(soundfile.available_formats())))
    lines.append("write formats: wav, flac")
    lines.append("models: " + ", ".join(MODELS))
    print("\n".join(lines), file=out)
    return 0


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: '{exc.filename}'"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: partial outputs are removed on the way out."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: Optional[Sequence[str]] = None, *, stdout=None, stderr=None) -> int:
    """Run the command line; returns the exit status (0 success, 2 user error, 130 interrupted by
    Ctrl-C, 143 terminated by SIGTERM)."""
    import signal
    import threading

    out = stdout or sys.stdout
    err = stderr or sys.stderr
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv, out, err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv, out, err) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise _UsageError("choose a command: separate, evaluate or info (see 'nmfcore --help')")
        command = {"separate": _cmd_separate, "evaluate": _cmd_evaluate, "info": _cmd_info}[args.command]
        return command(args, out, err)
    except _UsageError as exc:
        print(f"error: {exc}", file=err)
    except (NMFCoreError, OSError) as exc:
        print(f"error: {_message(exc)}", file=err)
    except SystemExit as exc:  # --help and --version exit 0 through argparse
        return int(exc.code or 0)
    except _Terminated:
        print("terminated", file=err)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
