"""The app's service layer: the only module of ``app/`` that imports nmfcore.

Everything the page needs from the engine goes through here: the model
registry for the picker, reading uploads, the fit (in a worker thread that
reports progress through the fit callback and can be stopped), grouping
components into sources, evaluation against reference stems and the export.

Caching
-------
Pure functions are wrapped in ``st.cache_data`` and keyed on *all* their
inputs: uploaded bytes are passed as ``bytes``; fitted results travel as a
:class:`ResultBundle` whose cache hash is its ``token``, a SHA-256 of the
audio bytes, the frozen settings and how far the fit ran (so two bundles
with the same token hold the same factors). Cached functions never draw UI
and raise :class:`InputError` with a user-facing message instead.

The fit itself is not cached by Streamlit (it streams progress): the page
keeps finished results in the session, keyed by :func:`result_key`, and
only fits when Run is pressed. Nothing is written to disk: audio is decoded
from memory and encoded to in-memory wav for players, downloads and the zip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import streamlit as st
import torch

import nmfcore
from app import teaching
from nmfcore import audio as na

__all__ = [
    "MAX_UPLOAD_MB", "UPLOAD_WIDGET_MB", "MAX_DURATION_S", "MAX_FILE_DURATION_S",
    "MIN_DURATION_S", "UPLOAD_TYPES", "EXAMPLE_PATH", "EXAMPLE_TITLE", "BETA_CASES",
    "INIT_LABELS", "INIT_HELP", "InputError", "SettingsError", "ModelChoice", "LoadedAudio", "ResultBundle", "FitJob",
    "models", "model_choice", "devices", "device_label", "default_settings", "beta_case", "build_settings",
    "settings_summary", "freq_bins", "nmf2d_shifts", "nmf2d_kernel", "fit_description", "nmfcore_version", "fit_threads", "warm_up", "example_bytes", "load_input",
    "segment", "input_spectrogram", "fit_problem", "progress_text", "reproduces_exactly", "result_key", "prepare_fit", "start_fit", "component_audio", "component_order",
    "component_centroids", "component_pitches", "component_label", "auto_assignment", "groups_from_assignment", "source_audio", "export_zip", "download_name",
    "evaluate_references", "MAX_GUIDED_SOURCES", "source_names_from_text", "selection_boxes", "selection_lassos", "guided_mark",
    "guided_lasso_mark",
    "to_marks", "guided_settings", "GuidedBundle", "GuidedJob", "start_guided", "can_refine",
]

# ------------------------------------------------------------------ limits
MAX_UPLOAD_MB = 20                 # per file (checked here, so that the page can say why a file is refused)
UPLOAD_WIDGET_MB = 200             # the uploader's own limit: beyond it the browser refuses the file
MAX_DURATION_S = 60.0              # the longest fit; of a longer recording the page fits a segment
MAX_FILE_DURATION_S = 1800.0       # longer files are refused (decoding them would take too much memory)
MIN_DURATION_S = 0.1               # shorter recordings are refused at upload
UPLOAD_TYPES = ("wav", "flac", "ogg", "mp3")
MAX_REFERENCES = 8
EXAMPLE_PATH = Path(__file__).resolve().parents[1] / "assets" / "example.wav"
EXAMPLE_TITLE = 'Bundled example: "Escape from chaosland" by Sectoid (10 s excerpt, MIT licence)'
_MIME = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}

# the named beta cases of the picker; "custom" takes a free value
BETA_CASES: dict[str, tuple[str, float | None]] = {
    "kl": ("Kullback-Leibler (β = 1)", 1.0),
    "euclidean": ("Euclidean (β = 2)", 2.0),
    "is": ("Itakura-Saito (β = 0)", 0.0),
    "custom": ("Other value", None),
}
INIT_LABELS = {"nndsvda": "NNDSVDa", "nndsvd": "NNDSVD", "nndsvdar": "NNDSVDar", "random": "Random (seeded)"}
INIT_HELP = {
    "nndsvda": "NNDSVDa: from the spectrogram's singular vectors, zeros filled with the mean.",
    "nndsvd": "NNDSVD: from the singular vectors, zeros kept (sparse start).",
    "nndsvdar": "NNDSVDar: from the singular vectors, zeros filled with small random values.",
    "random": "Random: a seeded random draw.",
}


class InputError(ValueError):
    """A problem with the user's file or settings, with a message fit for the page."""


class SettingsError(InputError):
    """Settings the engine refuses; :attr:`setting` names the one at fault (None if unknown)."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        if setting is None:  # the engine's messages start with "name=value ..."
            head = message.split("=", 1)[0].strip()
            setting = head if head.isidentifier() else None
        self.setting = setting


# ---------------------------------------------------------------- registry
@dataclass(frozen=True)
class ModelChoice:
    """What the picker needs to know about one model of ``nmfcore.audio.MODELS``."""

    name: str
    label: str
    description: str
    convolutive: bool
    kernel_help: str
    kernel_dims: int          # 0: no kernel, 1: time frames, 2: (frequency, time) shifts
    uses_beta: bool
    inits: tuple[str, ...]    # initialisations the model supports (empty: none apply)
    continuity: bool = False  # whether the engine accepts a temporal continuity weight for it
    defaults: dict = dataclasses.field(default_factory=dict, compare=False)  # settings the model starts from
    curve: str = "loss"       # what the fit reports: "loss" (falls) or "log-likelihood" (rises, EM models)


def _accepts_continuity(name: str) -> bool:
    """Whether the engine accepts ``continuity`` for this model (it decides; the app does not list models)."""
    try:
        na.SeparationSettings(model=name, continuity=0.1)
    except ValueError:  # ParameterError
        return False
    return True


def models() -> list[ModelChoice]:
    """Every model nmfcore offers for spectrograms, in registry order (built from ``MODELS``)."""
    return [ModelChoice(name=name, label=spec.label, description=spec.description, convolutive=spec.convolutive,
                        kernel_help=spec.kernel_help, kernel_dims=spec.layout.kernel_ndim,
                        uses_beta=spec.beta_divergence, inits=tuple(spec.init_methods),
                        continuity=_accepts_continuity(name), defaults=dict(spec.defaults), curve=spec.curve)
            for name, spec in na.MODELS.items()]


def curve_of(settings: Any) -> str:
    """What the fit of these settings reports per iteration: ``'loss'`` or ``'log-likelihood'`` (EM models)."""
    spec = na.MODELS.get(settings.model) if settings is not None else None
    return spec.curve if spec is not None else "loss"


def model_choice(name: str) -> ModelChoice:
    for m in models():
        if m.name == name:
            return m
    raise SettingsError(f"model={name!r} is not one of {list(na.MODELS)}")


def devices() -> list[str]:
    """Devices a fit can run on: always "cpu", and "cuda" when a CUDA device is present."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


def device_label(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return f"CUDA ({torch.cuda.get_device_name(0)})"
    return device.upper()


def default_settings() -> Any:
    """The engine's default settings, on CUDA when available."""
    s = na.SeparationSettings()
    if "cuda" in devices():
        s = dataclasses.replace(s, device="cuda")
    return s


def beta_case(beta: float) -> str:
    """Picker case of a beta value ("custom" when it is not one of the named ones)."""
    for case, (_, value) in BETA_CASES.items():
        if value is not None and float(beta) == value:
            return case
    return "custom"


SOLVER_LABELS = {  # short enough for the sidebar; "How it works" explains the chosen one
    "full": "Full batch",
    "mu_batch": "mu_batch · W per epoch",
    "asg_mu": "asg_mu · W every batch",
    "gsg_mu": "gsg_mu · W from one batch",
    "asag_mu": "asag_mu · averaged W",
    "gsag_mu": "gsag_mu · averaged, per epoch",
}


def solvers(model: str) -> list[str]:
    """The solvers the app offers for ``model``: full batch, and the mini-batch solvers for NMF."""
    return list(na.SOLVER_CHOICES) if model == "NMF" else ["full"]


def iteration_unit(settings: Any) -> str:
    """What one step of the fit's curve is: ``'epoch'`` (mini-batch solvers) or ``'iteration'``."""
    return "epoch" if settings.solver != "full" else "iteration"


def build_settings(*, model: str, rank: int, beta: float, n_iter: int, tol: float, kernel_size: Any,
                   init: str | None, seed: int, sparsity_H: float | None, n_fft: int, hop_length: int,
                   device: str, continuity: float = 0.0, solver: str = "full", batch_size: int = 1024) -> Any:
    """A frozen ``SeparationSettings`` from the picker's values (SettingsError if refused)."""
    if hop_length > n_fft:
        raise SettingsError(f"the hop ({hop_length}) must not be larger than the STFT size ({n_fft})",
                            setting="hop_length")
    try:
        return dataclasses.replace(
            na.SeparationSettings(), model=model, rank=int(rank), beta=float(beta), n_iter=int(n_iter),
            tol=float(tol), kernel_size=kernel_size, init=init, seed=int(seed), sparsity_H=sparsity_H,
            n_fft=int(n_fft), hop_length=int(hop_length), device=device, continuity=float(continuity),
            solver=solver, batch_size=int(batch_size))
    except (ValueError, TypeError) as exc:  # ParameterError is a ValueError
        raise SettingsError(str(exc)) from exc


def settings_summary(settings: Any) -> str:
    """One line describing settings, for captions."""
    k = settings.kernel_size
    kern = "" if not model_choice(settings.model).convolutive else f", kernel {k}"
    sp = "" if settings.sparsity_H is None else f", sparseness {settings.sparsity_H:g}"
    sp += f", continuity {settings.continuity:g}" if settings.continuity else ""
    if settings.solver != "full":
        sp += f", solver {settings.solver} (batches of {settings.batch_size} frames)"
    return (f"{settings.model}, rank {settings.rank}, β = {settings.beta:g}, {settings.n_iter} "
            f"{iteration_unit(settings)}s, "
            f"tol {settings.tol:g}{kern}{sp}, init {settings.init}, seed {settings.seed}, "
            f"STFT {settings.n_fft}/{settings.hop_length}, {settings.device}")


def freq_bins(n_fft: int, model: str = "NMF2D") -> int:
    """Frequency bins of ``model``'s spectrogram for an ``n_fft`` STFT (log-frequency models have fewer)."""
    return na.MODELS[model].layout.n_bins(int(n_fft) // 2 + 1)


def nmf2d_shifts(kernel_size: Any, n_fft: int, model: str = "NMF2D") -> int:
    """How many frequency shifts a 2-D patch of ``kernel_size = (bins, frames)`` has in an ``n_fft`` STFT."""
    kf = kernel_size[0] if isinstance(kernel_size, (tuple, list)) else int(kernel_size)
    return freq_bins(n_fft, model) - int(kf) + 1


def nmf2d_kernel(shifts: int, frames: int, n_fft: int, model: str = "NMF2D") -> tuple[int, int]:
    """The 2-D patch ``(bins, frames)`` with ``shifts`` frequency shifts in an ``n_fft`` STFT."""
    return max(1, freq_bins(n_fft, model) - int(shifts) + 1), int(frames)


def fit_description(settings: Any) -> teaching.FitDescription:
    """What "How it works" explains, from the settings and the solver the engine runs for them."""
    spec = na.MODELS[settings.model]
    kernel = settings.kernel()
    return teaching.FitDescription(
        model=settings.model, label=spec.label, beta=float(settings.beta) if spec.beta_divergence else None,
        solver="mu" if settings.solver != "full" else na.fit_solver(  # mini-batch: multiplicative updates
            settings.model, settings.beta, device=settings.device, sparsity_H=settings.sparsity_H,
            continuity=settings.continuity),
        kernel_dims=spec.layout.kernel_ndim, kernel=tuple(kernel),
        shifts=nmf2d_shifts(kernel, settings.n_fft, settings.model) if len(kernel) == 2 else None,
        sparsity_H=settings.sparsity_H, continuity=float(settings.continuity),
        mask_power=float(settings.mask_power), power=float(settings.power), device=settings.device,
        minibatch=settings.solver if settings.solver != "full" else None, batch_size=int(settings.batch_size))


def nmfcore_version() -> str:
    return nmfcore.__version__


def fit_threads() -> int:
    """Torch intra-op threads for fits: half the cores, at most 4 (env ``NMFCORE_APP_THREADS`` overrides).

    The server shares the machine with the page thread, other sessions and
    often the browser; on a 2-core laptop two OpenMP threads spin-wait on
    each other and a short fit becomes many times slower, one thread does not.
    """
    env = os.environ.get("NMFCORE_APP_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, (os.cpu_count() or 2) // 2))


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Once per server process: set the fit threads, then warm up in the background.

    A tiny separation and grouping in a background thread, so the first real
    Run does not pay for lazy imports (librosa's mel filters used by the
    grouping) and first-call kernel set-up.
    """
    torch.set_num_threads(fit_threads())

    def work():
        try:
            t = torch.arange(8000, dtype=torch.float32) / 8000
            y = (torch.sin(2 * torch.pi * 440 * t) + (t > 0.5) * torch.sin(2 * torch.pi * 1500 * t))[None]
            sep = na.separate(y, 8000, dataclasses.replace(na.SeparationSettings(), rank=2, n_iter=10,
                                                            n_fft=512, hop_length=128))
            na.auto_group(sep, 2)
            na.component_centroids(sep)
            _wav(sep.components[0], 8000)
        except Exception:  # warming up is only an optimisation
            pass

    thread = threading.Thread(target=work, name="nmfcore-warm-up", daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------- input
@dataclass(frozen=True)
class LoadedAudio:
    """A decoded recording. ``y`` is float32 (channels, samples); ``data`` the original bytes."""

    name: str
    digest: str
    data: bytes
    mime: str
    y: np.ndarray
    sr: int
    start: float = 0.0          # where this audio starts in the file, s (a segment of a longer file)
    total: float | None = None  # the whole file's duration, s, when this is a segment of it

    @property
    def channels(self) -> int:
        return int(self.y.shape[0])

    @property
    def duration(self) -> float:
        return self.y.shape[1] / self.sr

    @property
    def silent(self) -> bool:
        return not np.any(self.y)

    @property
    def too_long(self) -> bool:
        """Longer than a fit may be: the page asks for a segment."""
        return self.duration > MAX_DURATION_S + 1e-6

    def describe(self) -> str:
        ch = "mono" if self.channels == 1 else f"{self.channels} channels"
        part = "" if self.total is None else (f" · {self.start:.1f}–{self.start + self.duration:.1f} s of "
                                               f"{_minutes(self.total)}")
        return f"{self.duration:.1f} s{part} · {self.sr} Hz · {ch}"


def example_bytes() -> bytes:
    return EXAMPLE_PATH.read_bytes()


def _minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} minutes"


@st.cache_data(max_entries=16, show_spinner=False)
def load_input(data: bytes, name: str) -> LoadedAudio:
    """Decode an uploaded (or the bundled) file, enforcing the page's limits.

    Raises InputError with a message for the page, in the user's words:
    empty file, too large, unsupported type, not audio, too short, longer
    than a file may be. A recording longer than :data:`MAX_DURATION_S` loads
    (up to :data:`MAX_FILE_DURATION_S`): the page fits a segment of it
    (:func:`segment`).
    """
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise InputError(f"{name} is not a recording the app can read: use a {', '.join(UPLOAD_TYPES[:-1])} "
                         f"or {UPLOAD_TYPES[-1]} file.")
    if not data:
        raise InputError(f"{name} is empty (0 bytes).")
    size_mb = len(data) / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise InputError(f"{name} is {size_mb:.1f} MB; files up to {MAX_UPLOAD_MB} MB can be used.")
    try:
        y, sr = na.load_audio(data, max_duration=MAX_FILE_DURATION_S)
    except Exception as exc:  # AudioError or a decoder failing in its own way: a bad file, not a crash
        if isinstance(exc, na.AudioError) and "max_duration" in str(exc):
            raise InputError(f"{name} is longer than {_minutes(MAX_FILE_DURATION_S)}: cut it to the part you "
                             "want to separate first.") from None
        raise InputError(f"{name} could not be read as audio: the file is damaged, or it is not really a "
                         f"{suffix} file.") from None
    y = torch.as_tensor(y).detach().to("cpu", torch.float32)
    if y.ndim != 2 or y.shape[1] == 0:
        raise InputError(f"{name} holds no audio samples.")
    if y.shape[1] / sr < MIN_DURATION_S:
        raise InputError(f"{name} is only {y.shape[1] / sr:.2f} s long; a recording needs at least "
                         f"{MIN_DURATION_S:g} s to be separated.")
    if not torch.isfinite(y).all():
        raise InputError(f"{name} contains invalid samples (NaN or infinite values).")
    return LoadedAudio(name=name, digest=hashlib.sha256(data).hexdigest(), data=data,
                       mime=_MIME.get(suffix, "audio/wav"), y=y.numpy(), sr=int(sr))


@st.cache_data(max_entries=8, show_spinner=False)
def segment(data: bytes, name: str, start: float, length: float) -> LoadedAudio:
    """The part ``[start, start + length)`` seconds of a recording (at most :data:`MAX_DURATION_S`),
    as a recording of its own: its player, fit and results are the segment's."""
    audio = load_input(data, name)
    length = min(float(length), MAX_DURATION_S)
    a = max(0, min(int(round(float(start) * audio.sr)), audio.y.shape[1] - 1))
    b = min(audio.y.shape[1], a + int(round(length * audio.sr)))
    if (b - a) / audio.sr < MIN_DURATION_S:
        raise InputError(f"the segment from {start:g} s is shorter than {MIN_DURATION_S:g} s; start earlier.")
    y = np.ascontiguousarray(audio.y[:, a:b])
    wav = _wav(torch.from_numpy(y), audio.sr)
    digest = hashlib.sha256(f"{audio.digest}:{a}:{b}".encode()).hexdigest()
    return LoadedAudio(name=name, digest=digest, data=wav, mime="audio/wav", y=y, sr=audio.sr,
                       start=a / audio.sr, total=audio.duration)


@st.cache_data(max_entries=16, show_spinner=False)
def input_spectrogram(data: bytes, name: str, n_fft: int, hop_length: int, window: str = "hann",
                      power: float = 1.0) -> np.ndarray:
    """The spectrogram (freq x frames) the fit would factorise (the engine's STFT of the mono mix)."""
    audio = load_input(data, name)
    return na.spectrogram(torch.from_numpy(audio.y).mean(0), n_fft=int(n_fft), hop_length=int(hop_length),
                          window=window, power=power).numpy()


# ---------------------------------------------------------------------- fit
def fit_problem(audio: LoadedAudio, settings: Any) -> str | None:
    """Why these settings cannot be fitted to this recording (in the user's words), or None."""
    n = audio.y.shape[1]
    if n < settings.n_fft:
        return (f"The recording is {audio.duration:.2f} s long, shorter than one STFT window "
                f"({settings.n_fft} samples = {settings.n_fft / audio.sr:.2f} s at {audio.sr} Hz): choose a "
                "smaller STFT size under More settings.")
    kernel = settings.kernel()
    frames = na.spectral.n_frames(n, settings.hop_length)
    if len(kernel) >= 1 and kernel[-1] > frames:
        return (f"The recording has {frames} STFT frames, fewer than the {kernel[-1]} frames of each pattern: "
                "choose a shorter kernel or a smaller hop.")
    if len(kernel) == 2 and kernel[0] < 1:
        return "More frequency shifts than the spectrogram has bins: choose fewer shifts."
    return None


def progress_text(job: "FitJob") -> str:
    """The progress line of a running fit.

    The engine reports the loss every few iterations; in between, the
    iteration is estimated from the pace of the last reports (marked ≈), so
    the line moves at least every second even when an iteration is slow.
    """
    n_iter = job.settings.n_iter
    last = job.last
    if last is None:
        text = "starting…"
    else:
        it = last[0]
        if len(job.losses) >= 2 and not job.stop_requested:
            (i0, _), t0, t1 = job.losses[-2], job.times[-2], job.times[-1]
            if it > i0 and t1 > t0:
                guess = int(it + (it - i0) / (t1 - t0) * (job.elapsed - t1))
                guess = min(n_iter, guess, it + (it - i0) - 1)
                if guess > it:
                    it = guess
        text = (f"{iteration_unit(job.settings)} {'≈' if it != last[0] else ''}{it} / {n_iter} · "
                f"{curve_of(job.settings)} {last[1]:.4g}")
    if job.phase == "finishing":
        text = "masks, inverse STFT and grouping… " + text
    if job.stop_requested:
        text = "stopping… " + text
    return text


def reproduces_exactly(bundle: "ResultBundle") -> bool:
    """Whether a fit of real (non-silent) audio reached a loss of 0: the factors copied the data."""
    losses = bundle.losses
    if curve_of(bundle.settings) != "loss":  # a log-likelihood is <= 0 anyway
        return False
    return bool(losses) and len(losses) > 1 and losses[-1][1] <= 0.0 and float(np.max(bundle.separation.spectrogram)) > 0


def result_key(audio: LoadedAudio, settings: Any) -> str:
    """Cache key of a fit: SHA-256 over the audio bytes' digest and every setting."""
    payload = json.dumps({"audio": audio.digest, "settings": settings.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class ResultBundle:
    """A finished (or stopped) fit with what the page needs to show it.

    The worker thread fills in everything derived from the separation that
    the page shows right away (component wavs, the first grouping), so the
    page only draws once the fit ends.
    """

    key: str                  # result_key(audio, settings)
    audio_name: str
    audio_digest: str
    settings: Any
    separation: Any           # nmfcore.audio.Separation
    stopped: bool             # Stop was pressed before the fit converged
    elapsed: float            # seconds from start to finish of the fit (incl. masking, ISTFT)
    component_wavs: tuple[bytes, ...] = ()
    order: tuple[int, ...] = ()            # components by pitch, then the unpitched by centroid (silent last)
    centroids: tuple[float, ...] = ()      # spectral centroid of every component, Hz
    pitches: tuple[float, ...] = ()        # estimated pitch of every component, Hz (NaN: unpitched or silent)
    initial_sources: int = 0               # the automatic grouping computed with the result ...
    initial_assignment: tuple[int, ...] = ()  # ... source of every component

    @property
    def token(self) -> str:
        """What identifies the factors: settings + audio (key) and how many iterations ran."""
        return f"{self.key}:{self.separation.n_iter}:{int(self.stopped)}"

    @property
    def rank(self) -> int:
        return int(self.separation.components.shape[0])

    @property
    def sr(self) -> int:
        return int(self.separation.sr)

    @property
    def losses(self) -> list[tuple[int, float]]:
        return [(int(i), float(v)) for i, v in self.separation.losses]


def _assignment_from_groups(groups: Sequence[Sequence[int]], rank: int) -> list[int]:
    out = [-1] * rank
    for s, group in enumerate(groups):
        for r in group:
            out[int(r)] = s
    return out


def _bundle(job: "FitJob", sep: Any, n_sources: int, stopped: bool) -> ResultBundle:
    """Everything the page shows first, computed off the page's thread."""
    rank = int(sep.components.shape[0])
    wavs = tuple(_wav(sep.components[r], int(sep.sr)) for r in range(rank))
    sep.component_spectrograms  # noqa: B018 (computed and cached by the separation)
    sep.reconstruction  # noqa: B018
    centroids = tuple(float(c) for c in na.component_centroids(sep))
    pitches = tuple(float(p) for p in na.component_pitches(sep))
    order = tuple(na.component_order(sep, by="pitch"))
    n = max(1, min(int(n_sources), rank))
    assignment = tuple(_assignment_from_groups(na.auto_group(sep, n, seed=0), rank))
    return ResultBundle(key=job.key, audio_name=job.audio_name, audio_digest=job.audio_digest,
                        settings=job.settings, separation=sep, stopped=stopped,
                        elapsed=time.perf_counter() - job.started, component_wavs=wavs, order=order,
                        centroids=centroids, pitches=pitches,
                        initial_sources=n, initial_assignment=assignment)


_BUNDLE_HASH = {ResultBundle: lambda b: b.token}


class FitJob:
    """One fit running in a worker thread.

    The worker calls ``nmfcore.audio.separate`` with a callback that records
    ``(iteration, loss)`` and returns True once :meth:`stop` was called, so
    the fit ends at its next check and the partial factors are kept. The
    page polls :attr:`losses` and :attr:`done`; it never blocks the worker,
    and the worker never touches Streamlit.
    """

    kind = "blind"  # what the page does with the result: "blind" (components to group) or "guided"

    def __init__(self, audio: LoadedAudio, settings: Any, key: str, n_sources: int = 2):
        self.key = key
        self.n_sources = n_sources
        self.phase = "waiting"
        self.settings = settings
        self.audio_name = audio.name
        self.audio_digest = audio.digest
        self.losses: list[tuple[int, float]] = []
        self.times: list[float] = []      # seconds since start at each callback
        self.result: ResultBundle | None = None
        self.error: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self._stop = threading.Event()
        self._y = torch.from_numpy(audio.y.copy())
        self._sr = audio.sr
        self._thread = threading.Thread(target=self._run, name=f"nmfcore-fit-{key[:8]}", daemon=True)

    def start(self) -> "FitJob":
        """Start the worker (once; later calls do nothing)."""
        if self.started is None:
            self.started = time.perf_counter()
            self._thread.start()
        return self

    @property
    def is_started(self) -> bool:
        return self.started is not None

    def _callback(self, iteration: int, loss: float) -> bool:
        self.times.append(time.perf_counter() - self.started)
        self.losses.append((int(iteration), float(loss)))
        return self._stop.is_set()

    def _fit(self) -> Any:
        """The engine's fit, reporting to :meth:`_callback` (run in the worker)."""
        return na.separate(self._y, self._sr, self.settings, callback=self._callback)

    def _finish(self, sep: Any, stopped: bool) -> Any:
        """What the page shows of the fitted separation (computed in the worker)."""
        return _bundle(self, sep, self.n_sources, stopped)

    def _run(self) -> None:
        try:
            self.phase = "fitting"
            sep = self._fit()
            stopped = self._stop.is_set()  # a Stop during the finishing steps no longer changes the factors
            if not sep.losses:  # keep the curve even if the engine does not record it
                sep.losses = list(self.losses)
            self.phase = "finishing"
            self.result = self._finish(sep, stopped)
        except Exception as exc:  # reported on the page; the app keeps working
            self.error = str(exc) or type(exc).__name__
        finally:
            self._y = None
            self.phase = "done"
            self.finished = time.perf_counter()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.perf_counter()) - self.started

    @property
    def last(self) -> tuple[int, float] | None:
        return self.losses[-1] if self.losses else None

    def progress(self) -> float:
        last = self.last
        if self.done:
            return 1.0
        if last is None:
            return 0.0
        return min(1.0, last[0] / max(1, self.settings.n_iter))

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.done


def prepare_fit(audio: LoadedAudio, settings: Any, n_sources: int = 2) -> FitJob:
    """A fit of ``settings`` to ``audio``, not yet started: call ``.start()`` and poll it.

    ``n_sources`` is the number of sources of the first automatic grouping.
    """
    return FitJob(audio, settings, result_key(audio, settings), n_sources)


def start_fit(audio: LoadedAudio, settings: Any, n_sources: int = 2) -> FitJob:
    """Start fitting ``settings`` to ``audio`` in the background; poll the returned job."""
    return prepare_fit(audio, settings, n_sources).start()


# ------------------------------------------------------------ derived data
def _wav(y: torch.Tensor, sr: int) -> bytes:
    return na.audio_bytes(y.detach().to("cpu", torch.float32), sr, format="wav")


def component_audio(bundle: ResultBundle) -> tuple[bytes, ...]:
    """One in-memory wav per component (encoded by the worker with the result)."""
    return bundle.component_wavs


def component_order(bundle: ResultBundle) -> list[int]:
    """Components by estimated pitch, low to high, then the unpitched ones by spectral centroid."""
    return list(bundle.order)


def component_centroids(bundle: ResultBundle) -> list[float]:
    """Spectral centroid (Hz) of every component."""
    return list(bundle.centroids)


def component_pitches(bundle: ResultBundle) -> list[float]:
    """Estimated pitch (Hz) of every component; NaN where it is unpitched or silent."""
    return list(bundle.pitches)


def _hz(f: float) -> str:
    return f"{f / 1000:.1f} kHz" if f >= 1000 else f"{f:.0f} Hz"


def component_label(bundle: ResultBundle, r: int) -> str:
    """What a component card says of its sound: ``'A2 · 110 Hz'``, ``'unpitched · 4.9 kHz centroid'`` or ``'silent'``."""
    pitch, centroid = bundle.pitches[r], bundle.centroids[r]
    if math.isfinite(pitch):
        return f"{na.note_names([pitch])[0]} · {_hz(pitch)}"
    return f"unpitched · {_hz(centroid)} centroid" if math.isfinite(centroid) else "silent"


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=_BUNDLE_HASH)
def auto_assignment(bundle: ResultBundle, n_sources: int, seed: int = 0) -> list[int]:
    """Source index of every component from the engine's automatic grouping into ``n_sources``."""
    n_sources = max(1, min(int(n_sources), bundle.rank))
    if n_sources == bundle.initial_sources and seed == 0 and bundle.initial_assignment:
        return list(bundle.initial_assignment)
    return _assignment_from_groups(na.auto_group(bundle.separation, n_sources, seed=seed), bundle.rank)


def groups_from_assignment(assignment: Sequence[int], n_sources: int) -> list[list[int]]:
    """Component indices of each source (components assigned -1 go to the residual)."""
    return [[r for r, s in enumerate(assignment) if s == k] for k in range(n_sources)]


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=_BUNDLE_HASH)
def source_audio(bundle: ResultBundle, assignment: tuple[int, ...], n_sources: int) -> tuple[list[bytes], bytes]:
    """(one wav per source, residual wav) for this assignment of components to sources."""
    groups = groups_from_assignment(assignment, n_sources)
    sep = bundle.separation
    sources = sep.sources(groups)
    return [_wav(sources[k], bundle.sr) for k in range(n_sources)], _wav(sep.residual(groups), bundle.sr)


def _stem_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())
    return keep or "source"


@st.cache_data(max_entries=4, show_spinner=False, hash_funcs=_BUNDLE_HASH)
def export_zip(bundle: ResultBundle, assignment: tuple[int, ...], n_sources: int,
               names: tuple[str, ...]) -> bytes:
    """A zip with every stem (wav), the residual, ``factors.npz`` and ``settings.json``."""
    stems, residual = source_audio(bundle, assignment, n_sources)
    sep = bundle.separation
    groups = groups_from_assignment(assignment, n_sources)
    factors = io.BytesIO()
    np.savez_compressed(factors, W=np.asarray(sep.W), H=np.asarray(sep.H),
                        assignment=np.asarray(assignment, dtype=np.int64))
    meta = {
        "input": bundle.audio_name, "input_sha256": bundle.audio_digest, "sample_rate": bundle.sr,
        "settings": bundle.settings.to_dict(), "n_iter": int(sep.n_iter), "stopped": bundle.stopped,
        "sources": {names[k]: groups[k] for k in range(n_sources)},
        "residual_components": [r for r, s in enumerate(assignment) if s < 0],
        "losses": bundle.losses, "nmfcore_version": nmfcore.__version__,
    }
    buf = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, data in enumerate(stems):
            stem = _stem_name(names[k])
            while stem in used or stem == "residual":
                stem += "_"
            used.add(stem)
            zf.writestr(f"stems/{stem}.wav", data)
        zf.writestr("stems/residual.wav", residual)
        zf.writestr("factors.npz", factors.getvalue())
        zf.writestr("settings.json", json.dumps(meta, indent=2, default=str))
    return buf.getvalue()


@st.cache_data(max_entries=8, show_spinner=False, hash_funcs=_BUNDLE_HASH)
def evaluate_references(bundle: ResultBundle, assignment: tuple[int, ...], n_sources: int,
                        names: tuple[str, ...], references: tuple[tuple[str, bytes], ...]) -> list[dict]:
    """SI-SDR (and SDR where the engine can) of the sources against uploaded reference stems.

    Each reference is matched to the source the engine's evaluation pairs it
    with. Returns one row per reference: reference, matched source, SI-SDR
    and SDR in dB (None where unavailable).
    """
    if not references:
        return []
    if len(references) > MAX_REFERENCES:
        raise InputError(f"at most {MAX_REFERENCES} reference stems, got {len(references)}")
    sep = bundle.separation
    mix = sep.mixture
    refs = []
    for name, data in references:
        if not data:
            raise InputError(f"reference {name} is empty (0 bytes).")
        if len(data) / 2**20 > MAX_UPLOAD_MB:
            raise InputError(f"reference {name} is larger than {MAX_UPLOAD_MB} MB.")
        try:
            y, _ = na.load_audio(data, sr=bundle.sr, max_duration=MAX_DURATION_S + 1)
        except na.AudioError as exc:
            raise InputError(f"Could not use reference {name}: {exc}") from None
        except Exception as exc:
            raise InputError(f"Could not decode reference {name} ({type(exc).__name__}).") from None
        y = torch.as_tensor(y, dtype=torch.float32)
        if y.shape[0] != mix.shape[0]:  # match the mixture's channels
            y = y.mean(0, keepdim=True).expand(mix.shape[0], -1)
        n = mix.shape[-1]
        y = y[:, :n] if y.shape[1] >= n else torch.nn.functional.pad(y, (0, n - y.shape[1]))
        refs.append(y.contiguous())
    groups = groups_from_assignment(assignment, n_sources)
    estimates = sep.sources(groups).to("cpu", torch.float32)
    ref_names = [n for n, _ in references]
    refs = torch.stack(refs)
    report = na.evaluate(estimates, refs, names=ref_names)
    # the baseline: the mixture itself as every reference's estimate (what doing nothing scores)
    floor = na.evaluate(mix.to("cpu", torch.float32)[None].expand(len(refs), -1, -1).contiguous(), refs,
                        names=ref_names)
    metrics = [("si_sdr", "SI-SDR")] + [(k, k.upper()) for k in ("sdr", "sir", "sar") if k in report]
    rows = []
    for j, name in enumerate(ref_names):
        est = report["permutation"][j]
        row = {"reference": name, "matched source": names[est] if 0 <= est < len(names) else "—"}
        for key, label in metrics:
            row[f"{label} (dB)"] = _rounded(report[key][j])
            if key in ("si_sdr", "sdr"):
                base = _rounded(floor[key][j]) if key in floor else None
                row[f"mixture {label} (dB)"] = base
                row[f"{label} gain (dB)"] = (None if base is None or row[f"{label} (dB)"] is None
                                             else round(row[f"{label} (dB)"] - base, 2))
        rows.append(row)
    return rows


def _rounded(value: float) -> float | None:
    """A metric for the table: rounded to 0.01 dB, None where it is not finite (an unmatched reference)."""
    value = float(value)
    return round(value, 2) if np.isfinite(value) else None


def download_name(audio_name: str, part: str, suffix: str = ".wav") -> str:
    """A download's file name from the recording's and the part's: ``song_Source_1.wav``."""
    return f"{_stem_name(Path(audio_name).stem)}_{_stem_name(part)}{suffix}"


# ------------------------------------------------------------------ guided
# The user names the sources and marks boxes on the spectrogram where one of
# them sounds ("only this source here") or does not ("this source absent
# here"); the engine's guided separation (nmfcore.audio.separate_guided)
# fits a block of components per source that follows the marks, and
# refine() warm-starts a new fit from the previous result when marks change.
# A lasso becomes a polygon mark (the engine rasterises it onto the STFT grid).
MAX_GUIDED_SOURCES = 8


def source_names_from_text(text: str) -> list[str]:
    """Source names from the comma-separated text box: stripped, empty ones dropped, duplicates numbered."""
    names: list[str] = []
    for part in str(text or "").split(","):
        name = part.strip()
        if not name:
            continue
        base, k = name, 2
        while name in names:
            name, k = f"{base} {k}", k + 1
        names.append(name)
    return names[:MAX_GUIDED_SOURCES]


LASSO_STEPS = 16  # a lasso's edge on a log-frequency axis becomes this many straight pieces in Hz


def _selection_items(selection: Any, kind: str, log_freq: bool, least: int,
                     steps: int = 1) -> list[list[tuple[float, float]]]:
    """The (s, Hz) points of every ``kind`` item of a selection event (items with fewer or bad points skipped);
    with ``steps > 1`` every edge (of the closed path) is first cut into that many pieces on the chart's axes."""
    out: list[list[tuple[float, float]]] = []
    if not isinstance(selection, dict):
        return out
    for item in selection.get(kind) or []:
        if not isinstance(item, dict):
            continue
        xs, ys = item.get("x") or [], item.get("y") or []
        try:
            pts = [(float(x), float(y)) for x, y in zip(xs, ys) if x is not None and y is not None]
        except (TypeError, ValueError):
            continue
        if len(pts) < least or not all(math.isfinite(v) for p in pts for v in p):
            continue
        if steps > 1:
            pts = [(xa + k / steps * (xb - xa), ya + k / steps * (yb - ya))
                   for (xa, ya), (xb, yb) in zip(pts, pts[1:] + pts[:1]) for k in range(steps)]
        out.append([(x, 10.0 ** min(y, 6.0) if log_freq else y) for x, y in pts])
    return out


def selection_boxes(selection: Any, *, log_freq: bool) -> list[tuple[float, float, float, float]]:
    """``(t0, t1, f0, f1)`` (s, Hz) of every box of a Plotly selection event.

    ``selection`` is the ``selection`` part of ``st.plotly_chart``'s event
    (``{"box": [{"x": [..], "y": [..]}], "lasso": [...]}``) on a spectrogram
    of :mod:`app.plots` (x: time in s; y: Hz, or log10 Hz when ``log_freq``).
    Lassos are :func:`selection_lassos`.
    """
    out = []
    for pts in _selection_items(selection, "box", log_freq, 2):
        ts, fs = [p[0] for p in pts], [p[1] for p in pts]
        out.append((min(ts), max(ts), min(fs), max(fs)))
    return out


def selection_lassos(selection: Any, *, log_freq: bool) -> list[list[tuple[float, float]]]:
    """The vertices ``(seconds, Hz)`` of every lasso of a Plotly selection event (as :func:`selection_boxes`).

    On a log-frequency axis an edge that is straight on the chart is a curve
    in Hz, so every edge is cut into :data:`LASSO_STEPS` pieces on the
    chart's axes before the vertices are converted to Hz: the polygon the
    engine rasterises (straight edges in Hz) follows the drawn one.
    """
    return _selection_items(selection, "lasso", log_freq, 3, LASSO_STEPS if log_freq else 1)


def guided_mark(box: Sequence[float], source: int, *, absent: bool, weight: float, duration: float,
                sr: int) -> dict:
    """A mark (the engine's JSON form) from a box, clipped to the recording (InputError if nothing is left)."""
    t0, t1, f0, f1 = (float(v) for v in box)
    t0, t1 = max(0.0, t0), min(float(duration), t1)
    f0, f1 = max(0.0, f0), min(sr / 2, f1)
    if t1 - t0 <= 0 or f1 - f0 <= 0:
        raise InputError("That box lies outside the recording (or has no width or height): drag a box over "
                         "the spectrogram.")
    return na.Mark(int(source), t0, t1, f0, f1, weight=float(weight), absent=bool(absent)).to_dict()


def guided_lasso_mark(vertices: Sequence[Sequence[float]], source: int, *, absent: bool, weight: float,
                      duration: float, sr: int) -> dict:
    """A polygon mark (the engine's JSON form) from a lasso's vertices (s, Hz), each moved into the recording
    (InputError if the region left has no width or height)."""
    pts: list[tuple[float, float]] = []
    for t, f in vertices:
        p = (min(max(float(t), 0.0), float(duration)), min(max(float(f), 0.0), sr / 2))
        if not pts or p != pts[-1]:
            pts.append(p)
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts.pop()
    ts, fs = [p[0] for p in pts], [p[1] for p in pts]
    if len(pts) < 3 or max(ts) - min(ts) <= 0 or max(fs) - min(fs) <= 0:
        raise InputError("That lasso lies outside the recording (or has no width or height): draw around a "
                         "region of the spectrogram.")
    return na.Mark.from_polygon(int(source), pts, weight=float(weight), absent=bool(absent)).to_dict()


def to_marks(marks: Sequence[dict], n_sources: int, audio: LoadedAudio) -> list:
    """The engine's checked ``Mark`` list from the page's marks (InputError in the user's words)."""
    try:
        return na.check_marks(list(marks), n_sources=int(n_sources), duration=audio.duration, sr=audio.sr)
    except ValueError as exc:
        raise InputError(f"A mark cannot be used ({exc}); remove it and mark again.") from None


def guided_settings(settings: Any, n_sources: int) -> Any:
    """The sidebar's settings made fit for guided separation: NMF, full batch, no sparseness or continuity,
    and at least one component per source."""
    try:
        return dataclasses.replace(settings, model="NMF", kernel_size=1, sparsity_H=None, continuity=0.0,
                                   rank=max(int(settings.rank), int(n_sources)), solver="full")
    except (ValueError, TypeError) as exc:
        raise SettingsError(str(exc)) from exc


@dataclass(frozen=True, eq=False)
class GuidedBundle:
    """A finished guided separation: one wav and one spectrogram per named source."""

    key: str                       # result_key(audio, settings) of the first fit
    audio_name: str
    audio_digest: str
    settings: Any
    names: tuple[str, ...]
    separation: Any = dataclasses.field(repr=False)      # nmfcore.audio.GuidedSeparation
    wavs: tuple[bytes, ...] = dataclasses.field(repr=False)
    spectrograms: tuple[np.ndarray, ...] = dataclasses.field(repr=False)
    unmarked: tuple[int, ...]      # sources that had no marks
    refined: bool                  # warm-started from the previous result
    stopped: bool
    elapsed: float

    @property
    def losses(self) -> list[tuple[int, float]]:
        return [(int(i), float(v)) for i, v in self.separation.losses]


class GuidedJob(FitJob):
    """A guided separation (or a refinement of one) in a worker thread, polled like :class:`FitJob`."""

    kind = "guided"

    def __init__(self, audio: LoadedAudio, settings: Any, names: Sequence[str], marks: Sequence, previous=None):
        self.full_settings = settings
        shown = settings
        if previous is not None:  # refine() runs at most REFINE_ITER iterations: the progress counts those
            shown = dataclasses.replace(settings, n_iter=min(int(settings.n_iter), na.guided.REFINE_ITER))
        super().__init__(audio, shown, result_key(audio, settings), n_sources=len(names))
        self.names = tuple(names)
        self.marks = list(marks)
        self.previous = previous

    def _fit(self) -> Any:
        if self.previous is not None:
            return na.refine(self.previous.separation, self.marks, n_iter=int(self.settings.n_iter),
                             callback=self._callback, keep_components=False)
        return na.separate_guided(self._y, self._sr, self.marks, self.full_settings, n_sources=len(self.names),
                                  callback=self._callback, keep_components=False)

    def _finish(self, sep: Any, stopped: bool) -> GuidedBundle:
        s = self.full_settings
        sources = sep.sources().detach().to("cpu", torch.float32)
        wavs = tuple(_wav(sources[k], int(sep.sr)) for k in range(sources.shape[0]))
        specs = tuple(na.spectrogram(sources[k].mean(0), n_fft=s.n_fft, hop_length=s.hop_length,
                                     window=s.window, power=s.power).numpy() for k in range(sources.shape[0]))
        return GuidedBundle(key=self.key, audio_name=self.audio_name, audio_digest=self.audio_digest,
                            settings=s, names=self.names, separation=sep, wavs=wavs,
                            spectrograms=specs, unmarked=tuple(int(u) for u in sep.unmarked),
                            refined=self.previous is not None, stopped=stopped,
                            elapsed=time.perf_counter() - self.started)


def start_guided(audio: LoadedAudio, settings: Any, names: Sequence[str], marks: Sequence,
                 previous: GuidedBundle | None = None) -> GuidedJob:
    """Start a guided separation of ``audio`` into the named sources following ``marks`` (``Mark``s).

    With ``previous`` (a result for the same recording, settings and
    sources) the fit warm-starts from it (the engine's ``refine``).
    """
    return GuidedJob(audio, settings, names, marks, previous).start()


def can_refine(previous: GuidedBundle | None, audio: LoadedAudio, settings: Any, names: Sequence[str]) -> bool:
    """Whether a new guided fit may warm-start from ``previous``: same recording, settings and sources."""
    return (previous is not None and not previous.stopped and previous.audio_digest == audio.digest
            and previous.key == result_key(audio, settings) and len(previous.names) == len(names))
