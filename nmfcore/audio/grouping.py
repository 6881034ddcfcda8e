r"""Ordering components and grouping them into sources without references.

Every component ``r`` is summarised by its model spectrogram :math:`Y_r`
(freq x frames): its *spectral profile* :math:`p_r(f) = \sum_t Y_r(f, t)`
and its *activation envelope* :math:`e_r(t) = \sum_f Y_r(f, t)`.

* :func:`component_order` sorts components by the spectral centroid of
  :math:`p_r`, low to high, so that bass-like components come first, or
  by pitch (``by='pitch'``): :func:`component_pitches` estimates the
  fundamental frequency of every harmonic template by harmonic summation
  (Klapuri [6]_, :func:`harmonic_salience`) and leaves noise-like ones
  (drums, breath) unpitched.
* :func:`auto_group` clusters components into sources. Features
  (:func:`component_features`), each block scaled to the same weight:

  - ``'descriptors'``: four scalar descriptors of the kind Helén
    and Virtanen [3]_ used to tell drum components from harmonic ones --
    the log spectral centroid and the log spectral flatness of
    :math:`p_r` (pitch region; noisy versus tonal), the onset flux
    (mean positive increment of :math:`\log e_r`, relative to its spread)
    and the Hoyer sparseness of :math:`e_r` (transient versus sustained);
  - ``'mfcc'``: MFCCs 1-12 of :math:`p_r`, the timbre of the template, as
    proposed by Spiertz and Gnann [1]_;
  - ``'activation'``: the log-compressed envelope, centred and scaled to
    unit norm, so that squared distances are ``2 - 2 corr`` (components
    that play together are close; temporal co-activation as in [2]_);
  - any ``'+'``-joined combination; the default is ``'descriptors+mfcc'``
    (it did best on the development mixtures, with spectral clustering).

  Clustering is spectral (normalised cut, Ng, Jordan and Weiss [5]_) on a
  Gaussian affinity of the features, which, unlike plain k-means, does not
  leave a source with one stray component; ``method='kmeans'`` runs
  k-means++ on the features instead.

How well this works is measured by the separation benchmark: clustering
without references stays well below the best grouping of the same
components (see the benchmark records).

References
----------
.. [1] M. Spiertz and V. Gnann, "Source-filter based clustering for
   monaural blind source separation", DAFx 2009.
.. [2] R. Jaiswal, D. FitzGerald, D. Barry, E. Coyle and S. Rickard,
   "Clustering NMF basis functions using shifted NMF for monaural sound
   source separation", ICASSP 2011.
.. [3] M. Helén and T. Virtanen, "Separation of drums from polyphonic music
   using non-negative matrix factorization and support vector machine",
   EUSIPCO 2005.
.. [4] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful
   seeding", SODA 2007.
.. [5] A. Y. Ng, M. I. Jordan and Y. Weiss, "On spectral clustering:
   analysis and an algorithm", NIPS 2001.
.. [6] A. Klapuri, "Multiple fundamental frequency estimation by summing
   harmonic amplitudes", ISMIR 2006.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._validation import check_finite_float, check_int, check_positive_int
from ..exceptions import ParameterError
from .spectral import frame_blocks

__all__ = ["component_summaries", "component_centroids", "component_order", "component_features", "kmeans",
           "spectral_clustering", "auto_group", "harmonic_salience", "component_pitches", "note_names",
           "describe_sources", "FEATURE_BLOCKS", "GROUPING_METHODS", "ORDERS"]

FEATURE_BLOCKS = ("descriptors", "mfcc", "activation")
GROUPING_METHODS = ("spectral", "kmeans")
ORDERS = ("centroid", "pitch")


def component_summaries(separation) -> tuple[Tensor, Tensor]:
    """Spectral profiles (R, freq) and activation envelopes (R, frames) of every component, float64 on the CPU.

    Computed block by block of frames (never a whole component spectrogram
    in float64) and cached on the separation.
    """
    def compute():
        W, H = separation.factors
        layout = separation.settings.layout
        R, F, T = separation.rank, len(separation.freqs), len(separation.times)
        profiles = torch.zeros((R, F), dtype=torch.float64)
        envelopes = torch.zeros((R, T), dtype=torch.float64)
        for a, b in frame_blocks(T):
            for r in range(R):
                Y = layout.component_frames(H, W, r, a, b)
                profiles[r] += Y.sum(1, dtype=torch.float64).cpu()
                envelopes[r, a:b] = Y.sum(0, dtype=torch.float64).cpu()
        return profiles, envelopes

    return separation.cached("summaries", compute)


def component_centroids(separation) -> np.ndarray:
    """Spectral centroid in Hz of every component (NaN for a silent component).

    Examples
    --------
    >>> import torch
    >>> from nmfcore.audio import SeparationSettings, separate
    >>> sr = 8000
    >>> t = torch.arange(2 * sr) / sr
    >>> y = torch.sin(2 * torch.pi * 2000 * t) * (t < 1) + torch.sin(2 * torch.pi * 250 * t) * (t >= 1)
    >>> sep = separate(y, sr, SeparationSettings(rank=2, n_fft=512, hop_length=128))
    >>> low, high = sorted(component_centroids(sep))
    >>> bool(200 < low < 500 and 1800 < high < 2300)
    True
    """
    profiles, _ = component_summaries(separation)
    freqs = torch.from_numpy(separation.freqs)
    total = profiles.sum(1)
    cent = (profiles * freqs).sum(1) / torch.where(total > 0, total, torch.ones_like(total))
    cent[total <= 0] = float("nan")
    return cent.numpy()


def component_order(separation, *, by: str = "centroid") -> list[int]:
    """Component indices sorted low to high, silent components last.

    Parameters
    ----------
    separation : Separation
    by : {'centroid', 'pitch'}, default 'centroid', keyword-only
        ``'centroid'``: by spectral centroid. ``'pitch'``: the pitched
        components by their estimated fundamental frequency
        (:func:`component_pitches`), then the unpitched ones by centroid.

    Examples
    --------
    >>> import torch
    >>> from nmfcore.audio import SeparationSettings, separate
    >>> sr = 8000
    >>> t = torch.arange(2 * sr) / sr
    >>> y = torch.sin(2 * torch.pi * 2000 * t) * (t < 1) + torch.sin(2 * torch.pi * 250 * t) * (t >= 1)
    >>> sep = separate(y, sr, SeparationSettings(rank=2, n_fft=512, hop_length=128))
    >>> order = component_order(sep)
    >>> c = component_centroids(sep)
    >>> bool(c[order[0]] < c[order[1]])
    True
    >>> component_order(sep, by="pitch") == order  # pure tones: pitch and centroid agree
    True
    """
    if by not in ORDERS:
        raise ParameterError(f"by={by!r} must be one of {ORDERS}")
    cent = component_centroids(separation)
    key = np.where(np.isnan(cent), np.inf, cent)
    if by == "centroid":
        return [int(i) for i in np.argsort(key, kind="stable")]
    pitch = component_pitches(separation)
    pitched = ~np.isnan(pitch)
    # pitched first (by pitch), then unpitched (by centroid), then silent: a lexicographic sort
    return [int(i) for i in np.lexsort((key, np.where(pitched, pitch, np.inf), ~pitched))]


def harmonic_salience(profiles: Tensor, freqs, *, fmin: float = 30.0, fmax: float = 2000.0,
                      n_harmonics: int = 12, bins_per_octave: int = 48) -> tuple[Tensor, Tensor]:
    r"""Fundamental frequency and harmonic salience of magnitude spectra, by harmonic summation.

    For every candidate :math:`f_0` on a grid of ``bins_per_octave`` steps
    per octave in [``fmin``, ``fmax``] the salience is Klapuri's weighted
    sum of the (square-root compressed, unit-sum) spectrum at the harmonics
    ([6]_):

    .. math::
        s(f_0) = \sum_{h=1}^{n_h} \frac{f_0 + \alpha}{h f_0 + \beta}\,
                 \max(P[\lfloor h f_0 / \Delta f \rfloor], P[\lceil h f_0 / \Delta f \rceil])

    with :math:`\alpha` = 27 Hz and :math:`\beta` = 320 Hz, whose decay
    over the harmonics keeps the sum from preferring the sub-octave. The
    estimate is the best candidate; its salience is reported relative to
    what a flat spectrum scores at that candidate, so that about 1 means
    noise-like and a harmonic spectrum scores several times more (the
    decision threshold is :func:`component_pitches`'s).

    Parameters
    ----------
    profiles : torch.Tensor [shape=(R, freq)]
        Non-negative magnitude spectra on the bins ``freqs``.
    freqs : array-like [shape=(freq,)]
        Bin frequencies in Hz, equally spaced from 0.
    fmin, fmax : float, keyword-only
        Range of the candidates, 0 < fmin < fmax.
    n_harmonics : int, default 12, keyword-only
    bins_per_octave : int, default 48, keyword-only
        Resolution of the candidate grid (48: a quarter tone).

    Returns
    -------
    f0 : torch.Tensor [shape=(R,)]
        Hz, float64.
    salience : torch.Tensor [shape=(R,)]
        0 for an all-zero spectrum.

    Examples
    --------
    >>> import torch
    >>> freqs = torch.arange(1025) * 22050 / 2048
    >>> P = torch.zeros(1, 1025)
    >>> for h in range(1, 9):  # harmonics 1-8 of 110 Hz (A2)
    ...     P[0, round(h * 110 / float(freqs[1]))] = 1 / h
    >>> f0, salience = harmonic_salience(P, freqs)
    >>> round(float(f0[0])), bool(salience[0] > 5)
    (110, True)
    """
    fmin = check_finite_float(fmin, "fmin")
    fmax = check_finite_float(fmax, "fmax")
    if fmax <= fmin:
        raise ParameterError(f"fmax={fmax!r} must be above fmin={fmin!r}")
    n_harmonics = check_positive_int(n_harmonics, "n_harmonics")
    bins_per_octave = check_positive_int(bins_per_octave, "bins_per_octave")
    profiles = torch.as_tensor(profiles).to(torch.float64)
    freqs = torch.as_tensor(np.asarray(freqs, dtype=np.float64))
    if profiles.ndim != 2 or profiles.shape[1] != freqs.numel() or freqs.numel() < 2:
        raise ParameterError(f"profiles of shape {tuple(profiles.shape)} need one value per bin of freqs "
                             f"({freqs.numel()} bins, at least 2)")
    F = profiles.shape[1]
    df = float(freqs[1] - freqs[0])
    P = profiles.clamp_min(0).sqrt()
    total = P.sum(1, keepdim=True)
    P = P / torch.where(total > 0, total, torch.ones_like(total))
    n_cand = int(math.floor(math.log2(fmax / fmin) * bins_per_octave + 1e-9)) + 1
    cand = fmin * 2.0 ** (torch.arange(n_cand, dtype=torch.float64) / bins_per_octave)
    score = torch.zeros(P.shape[0], n_cand, dtype=torch.float64)
    flat = torch.zeros(n_cand, dtype=torch.float64)
    for h in range(1, n_harmonics + 1):
        pos = cand * h / df
        weight = (cand + 27.0) / (h * cand + 320.0) * (pos <= F - 1)  # harmonics above the top bin add nothing
        lo = pos.floor().long().clamp(max=F - 1)
        score += weight * torch.maximum(P[:, lo], P[:, (lo + 1).clamp(max=F - 1)])
        flat += weight / F
    best = score.argmax(1)
    salience = score.gather(1, best[:, None])[:, 0] / flat[best].clamp_min(1e-300)
    return cand[best], torch.where(total[:, 0] > 0, salience, torch.zeros_like(salience))


def component_pitches(separation, *, fmin: float = 30.0, fmax: float = 2000.0,
                      min_salience: float = 2.5) -> np.ndarray:
    """Estimated fundamental frequency in Hz of every component, NaN where it is unpitched or silent.

    :func:`harmonic_salience` of each component's spectral profile; a
    component is pitched when its salience reaches ``min_salience``; the
    default lies between the scores of the unpitched (hi-hat, snare) and the
    harmonic templates of the development mixtures of the separation
    benchmark. A template that covers several notes reports the dominant one.

    Examples
    --------
    >>> import torch
    >>> from nmfcore.audio import SeparationSettings, separate
    >>> sr = 8000
    >>> t = torch.arange(2 * sr) / sr
    >>> tone = sum(torch.sin(2 * torch.pi * 220 * h * t) / h for h in range(1, 6)) * (t < 1)
    >>> noise = 0.3 * torch.randn(2 * sr, generator=torch.Generator().manual_seed(0)) * (t >= 1)
    >>> sep = separate(tone + noise, sr, SeparationSettings(rank=2, n_fft=1024, hop_length=256))
    >>> pitches = component_pitches(sep)
    >>> [round(float(p)) for p in pitches if not np.isnan(p)], int(np.isnan(pitches).sum())  # the noise: unpitched
    ([220], 1)
    """
    min_salience = check_finite_float(min_salience, "min_salience")
    key = ("pitches", fmin, fmax, min_salience)  # cached: component_order(by='pitch') reads them too

    def compute():
        profiles, _ = component_summaries(separation)
        f0, salience = harmonic_salience(profiles, separation.freqs, fmin=fmin, fmax=min(fmax, separation.sr / 2))
        out = f0.numpy().copy()
        out[(salience < min_salience).numpy()] = np.nan
        return out

    return separation.cached(key, compute).copy()


def note_names(pitches) -> list[str]:
    """Note names (``'A2'``, ``'C#4'``) of frequencies in Hz, ``''`` for NaN.

    Examples
    --------
    >>> note_names([110.0, 261.63, float("nan")])
    ['A2', 'C4', '']
    """
    import librosa

    return ["" if not np.isfinite(p) or p <= 0 else str(librosa.hz_to_note(float(p), unicode=False))
            for p in np.asarray(pitches, dtype=np.float64).ravel()]


def describe_sources(separation, groups) -> list[dict]:
    """What kind of sound every source of a grouping has, from its components' summaries.

    For each group: its ``components``, the spectral ``centroid_hz`` of their
    summed spectral profiles, the share of the group's energy in pitched
    components (:func:`component_pitches`), the ``pitch_hz`` and ``note`` of
    its loudest pitched component (None where there is none) and a short
    ``sound`` text such as ``'pitched, low (centroid 180 Hz), A2'`` or
    ``'unpitched, bright (centroid 4.2 kHz)'``, so that a user can tell the
    drums from the bass without listening to every file.

    Examples
    --------
    >>> import torch
    >>> from nmfcore.audio import SeparationSettings, separate
    >>> t = torch.arange(8000) / 8000
    >>> tone = sum(torch.sin(2 * torch.pi * 220 * h * t) / h for h in range(1, 6))  # A3 and 4 harmonics
    >>> sep = separate(tone, 8000, SeparationSettings(rank=1, n_fft=1024, hop_length=256))
    >>> describe_sources(sep, [[0]])[0]["sound"]
    'pitched, mid (centroid 498 Hz), A3'
    """
    profiles, _ = component_summaries(separation)
    freqs = torch.from_numpy(np.asarray(separation.freqs, dtype=np.float64))
    pitches = component_pitches(separation)
    energy = profiles.sum(1)
    out = []
    for g in groups:
        g = [int(r) for r in g]
        p = profiles[g].sum(0) if g else torch.zeros_like(freqs)
        total = float(p.sum())
        centroid = float((p * freqs).sum() / total) if total > 0 else float("nan")
        pitched = [r for r in g if np.isfinite(pitches[r])]
        share = float(energy[pitched].sum() / total) if pitched and total > 0 else 0.0
        main = max(pitched, key=lambda r: float(energy[r])) if pitched else None
        pitch = float(pitches[main]) if main is not None else None
        note = note_names([pitch])[0] if pitch is not None else None
        if not total > 0:
            sound = "silent"
        else:
            register = "low" if centroid < 400 else ("mid" if centroid < 2000 else "bright")
            where = f"{centroid:.0f} Hz" if centroid < 1000 else f"{centroid / 1000:.1f} kHz"
            sound = f"{'pitched' if share >= 0.5 else 'unpitched'}, {register} (centroid {where})"
            if note:
                sound += f", {note}"
        out.append({"components": g, "centroid_hz": centroid if total > 0 else None, "pitched_share": share,
                    "pitch_hz": pitch, "note": note, "sound": sound})
    return out


def _mel_matrix(sr: int, n_fft: int, n_mels: int) -> Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, norm="slaney")).double()


def _dct_matrix(n: int) -> Tensor:
    # orthonormal DCT-II, rows are the cosine basis (as scipy.fft.dct(norm='ortho'))
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None]
    D = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    D[0] /= math.sqrt(2.0)
    return D


def _unit_rows(X: Tensor) -> Tensor:
    X = X - X.mean(1, keepdim=True)
    norms = X.norm(dim=1, keepdim=True)
    return X / torch.where(norms > 0, norms, torch.ones_like(norms))


def _descriptors(profiles: Tensor, envelopes: Tensor, freqs: Tensor) -> Tensor:
    """Log centroid, log flatness, onset flux and activation sparseness (R, 4), each standardised."""
    total = profiles.sum(1, keepdim=True).clamp_min(1e-300)
    centroid = torch.log2(((profiles / total) * freqs).sum(1).clamp_min(1.0))
    floor = 1e-12 * profiles.max().clamp_min(1e-300)
    flatness = torch.log(profiles + floor).mean(1) - torch.log(profiles.mean(1) + floor)
    log_env = torch.log(envelopes + 1e-3 * envelopes.max(1, keepdim=True).values + 1e-300)
    flux = log_env.diff(dim=1).clamp_min(0).mean(1) / log_env.std(1).clamp_min(1e-9)
    n = envelopes.shape[1]
    l1_l2 = envelopes.sum(1) / envelopes.norm(dim=1).clamp_min(1e-300)
    sparseness = (math.sqrt(n) - l1_l2) / max(math.sqrt(n) - 1, 1e-9)
    D = torch.stack([centroid, flatness, flux, sparseness], 1)
    std = D.std(0, keepdim=True) if D.shape[0] > 1 else torch.ones_like(D[:1])
    return (D - D.mean(0, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))


def component_features(separation, *, features: str = "descriptors+mfcc", n_mfcc: int = 12,
                       n_mels: int = 40) -> Tensor:
    """Feature vectors (R, d) of the components, as clustered by :func:`auto_group`.

    Parameters
    ----------
    separation : Separation
    features : str, default 'descriptors+mfcc', keyword-only
        Blocks from :data:`FEATURE_BLOCKS` joined by ``'+'`` (see the module
        notes). Every block is centred and scaled to unit mean squared norm
        over the components (each descriptor is standardised first), so
        blocks weigh the same whatever their size.
    n_mfcc : int, default 12
        MFCCs 1..n_mfcc of the spectral profile.
    n_mels : int, default 40
        Mel bands of the MFCC filterbank.

    Examples
    --------
    >>> import torch
    >>> from nmfcore.audio import SeparationSettings, separate
    >>> y = torch.randn(8000, generator=torch.Generator().manual_seed(0))
    >>> sep = separate(y, 8000, SeparationSettings(rank=3, n_fft=256, hop_length=64))
    >>> component_features(sep).shape, component_features(sep, features="mfcc+activation").shape
    (torch.Size([3, 16]), torch.Size([3, 138]))
    """
    names = str(features).split("+")
    if not names or any(n not in FEATURE_BLOCKS for n in names) or len(set(names)) != len(names):
        raise ParameterError(f"features={features!r} must be one or more of {FEATURE_BLOCKS} joined by '+'")
    profiles, envelopes = component_summaries(separation)
    blocks = []
    if "descriptors" in names:
        blocks.append(_descriptors(profiles, envelopes, torch.from_numpy(separation.freqs)))
    if "mfcc" in names:
        mel = _mel_matrix(separation.sr, separation.settings.n_fft, n_mels) @ profiles.t()  # (n_mels, R)
        mel = mel / mel.sum(0, keepdim=True).clamp_min(1e-300)  # timbre only, not level
        ceps = _dct_matrix(n_mels) @ torch.log(mel + 1e-8)
        blocks.append(ceps[1:n_mfcc + 1].t())
    if "activation" in names:
        scale = envelopes.mean(1, keepdim=True).clamp_min(1e-300)
        blocks.append(_unit_rows(torch.log1p(envelopes / scale)))
    out = []
    for B in blocks:
        B = B - B.mean(0, keepdim=True)
        ms = float(B.square().sum(1).mean())
        out.append(B / math.sqrt(ms) if ms > 0 else B)
    return torch.cat(out, 1)


def kmeans(X: Tensor, k: int, *, generator: torch.Generator | None = None, n_init: int = 10,
           max_iter: int = 100) -> Tensor:
    """Lloyd's k-means with k-means++ seeding ([4]_); the labels (n,) of the best of ``n_init`` runs.

    Examples
    --------
    >>> X = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    >>> labels = kmeans(X, 2, generator=torch.Generator().manual_seed(0))
    >>> bool(labels[0] == labels[1]) and bool(labels[2] == labels[3]) and bool(labels[0] != labels[2])
    True
    """
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ParameterError(f"k={k} clusters need 1 <= k <= {n} points")
    X = X.double()
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        centers = X[torch.randint(n, (1,), generator=generator)]
        for _ in range(1, k):
            d2 = torch.cdist(X, centers).square().min(1).values
            p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full((n,), 1.0 / n, dtype=X.dtype)
            centers = torch.cat([centers, X[torch.multinomial(p, 1, generator=generator)]])
        labels = None
        for _ in range(max_iter):
            d2 = torch.cdist(X, centers).square()
            new = d2.argmin(1)
            for j in range(k):  # an empty cluster takes the point farthest from its centre
                if not bool((new == j).any()):
                    far = d2.gather(1, new[:, None])[:, 0]
                    far[torch.bincount(new, minlength=k)[new] <= 1] = -1
                    new[int(far.argmax())] = j
            if labels is not None and bool((new == labels).all()):
                break
            labels = new
            centers = torch.stack([X[labels == j].mean(0) for j in range(k)])
        inertia = float((X - centers[labels]).square().sum())
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels.clone(), inertia
    return best


def spectral_clustering(X: Tensor, k: int, *, generator: torch.Generator | None = None) -> Tensor:
    r"""Normalised spectral clustering ([5]_) of the rows of ``X``; the labels (n,).

    Affinity :math:`A_{ij} = \exp(-\|x_i - x_j\|^2 / \sigma^2)` with
    :math:`\sigma^2` the median squared distance, the ``k`` leading
    eigenvectors of :math:`D^{-1/2} A D^{-1/2}`, rows scaled to unit norm and
    clustered by :func:`kmeans`.

    Examples
    --------
    >>> X = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0]])
    >>> labels = spectral_clustering(X, 2, generator=torch.Generator().manual_seed(0))
    >>> len(set(labels[:3].tolist())), len(set(labels[3:].tolist())), bool(labels[0] != labels[3])
    (1, 1, True)
    """
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ParameterError(f"k={k} clusters need 1 <= k <= {n} points")
    if k in (1, n):
        return torch.zeros(n, dtype=torch.long) if k == 1 else torch.arange(n)
    D2 = torch.cdist(X.double(), X.double()).square()
    positive = D2[D2 > 0]
    sigma2 = float(positive.median()) if positive.numel() else 1.0
    A = torch.exp(-D2 / sigma2)
    A.fill_diagonal_(0)
    d = A.sum(1).clamp_min(1e-300)
    L = A / torch.sqrt(d[:, None] * d[None])
    _, vectors = torch.linalg.eigh(L)
    U = vectors[:, -k:]
    U = U / U.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return kmeans(U, k, generator=generator)


def auto_group(separation, n_sources: int, *, seed: int = 0, features: str = "descriptors+mfcc",
               method: str = "spectral") -> list[list[int]]:
    """Group the components into ``n_sources`` sources by clustering their features.

    Groups are listed by their mean spectral centroid, low to high, and
    components within a group in index order. Every component is in exactly
    one group, so the sources sum to the mixture.

    Parameters
    ----------
    separation : Separation
    n_sources : int
        Number of groups, at most the number of components.
    seed : int, default 0, keyword-only
        Seed of the k-means seeding.
    features : str, default 'descriptors+mfcc', keyword-only
        See :func:`component_features`.
    method : {'spectral', 'kmeans'}, default 'spectral', keyword-only
        :func:`spectral_clustering` or :func:`kmeans` of the features.

    Returns
    -------
    list of list of int

    Examples
    --------
    >>> import torch
    >>> from nmfcore.audio import SeparationSettings, separate
    >>> sr = 8000
    >>> t = torch.arange(2 * sr) / sr
    >>> y = torch.sin(2 * torch.pi * 2000 * t) * (t < 1) + torch.sin(2 * torch.pi * 250 * t) * (t >= 1)
    >>> sep = separate(y, sr, SeparationSettings(rank=4, n_fft=512, hop_length=128))
    >>> groups = auto_group(sep, 2)
    >>> sorted(r for g in groups for r in g)
    [0, 1, 2, 3]
    """
    R = separation.rank
    check_int(n_sources, "n_sources", low=1, high=R)  # at most the number of components
    check_int(seed, "seed", low=0)
    if method not in GROUPING_METHODS:
        raise ParameterError(f"method={method!r} must be one of {GROUPING_METHODS}")
    X = component_features(separation, features=features)
    cluster = spectral_clustering if method == "spectral" else kmeans
    labels = cluster(X, int(n_sources), generator=torch.Generator().manual_seed(int(seed)))
    groups = [[int(r) for r in torch.nonzero(labels == j)[:, 0]] for j in range(int(n_sources))]
    cent = component_centroids(separation)
    cent = np.where(np.isnan(cent), 1e12, cent)
    key = [float(np.mean(cent[g])) if g else np.inf for g in groups]
    return [groups[j] for j in np.argsort(key, kind="stable")]
