"""Pure figure builders for the app.

Every function here takes numpy arrays and plain numbers and returns a
``plotly.graph_objects.Figure`` (:func:`component_image`: an RGB array, a
light picture for the grid of component cards; the helpers: arrays).
Nothing in this module imports nmfcore or streamlit, touches session state
or draws anything: the page decides where a figure goes.

Spectrogram-like arrays are reduced for display before they go to the
browser (at most a few hundred rows and columns, magnitudes in dB), so a
figure stays small however long the recording is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sequential

# as rgb() strings: given Magma's first stop as "#000004", the browser's plotly.js drew it pink
_MAGMA = [f"rgb({int(c[1:3], 16)},{int(c[3:5], 16)},{int(c[5:7], 16)})" for c in sequential.Magma]

__all__ = [
    "to_db", "pool_time", "log_frequency_pool", "display_grid",
    "loss_figure", "LOSS_VIEWS", "spectrogram_figure", "templates_figure", "activations_figure",
    "component_image", "colormap", "COLORSCALE", "SOURCE_COLOURS", "source_colour", "marked_spectrogram_figure",
]

# explicit colour stops: a theme (Streamlit's) cannot swap a named scale for its own
COLORSCALE = [[i / (len(_MAGMA) - 1), c] for i, c in enumerate(_MAGMA)]
MAX_FRAMES = 480          # time columns in a main heatmap
MAX_BINS = 256            # frequency rows in a main heatmap
THUMB_FRAMES = 160        # time columns in a component thumbnail
THUMB_BINS = 96           # frequency rows in a component thumbnail
LOG_FMIN = 30.0           # lowest frequency (Hz) of the log-frequency axis
_FONT = dict(size=12)
_TICKS_HZ = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


# --------------------------------------------------------------- array helpers
def to_db(S: np.ndarray, *, top_db: float = 80.0, power: float = 1.0) -> np.ndarray:
    """Magnitude (``power=1``) or power (``power=2``) in dB relative to the peak, floored at ``-top_db``."""
    S = np.asarray(S, dtype=np.float64)
    peak = float(S.max()) if S.size else 0.0
    if peak <= 0 or not np.isfinite(peak):
        return np.full(S.shape, -top_db, dtype=np.float32)
    factor = 20.0 / power
    db = factor * np.log10(np.maximum(S, peak * 1e-12) / peak)
    return np.maximum(db, -top_db).astype(np.float32)


def pool_time(S: np.ndarray, max_frames: int) -> tuple[np.ndarray, int]:
    """Average groups of adjacent columns so that at most ``max_frames`` remain.

    Returns the pooled array and the pooling factor (1 when nothing changed).
    """
    n = S.shape[-1]
    factor = max(1, int(np.ceil(n / max_frames)))
    if factor == 1:
        return S, 1
    m = n // factor * factor
    head = S[..., :m].reshape(S.shape[:-1] + (m // factor, factor)).mean(-1)
    if m < n:
        head = np.concatenate([head, S[..., m:].mean(-1, keepdims=True)], axis=-1)
    return head, factor


def log_frequency_pool(S: np.ndarray, freqs: np.ndarray, n_bins: int,
                       fmin: float = LOG_FMIN) -> tuple[np.ndarray, np.ndarray]:
    """Resample the rows of ``S`` (one per frequency in ``freqs``) onto ``n_bins`` log-spaced bands.

    Each band is the mean of the rows inside it, or the nearest row where a
    band is narrower than the frequency resolution. Returns
    ``(pooled, centres_hz)``.
    """
    fmax = float(freqs[-1])
    fmin = min(fmin, fmax / 2)
    edges = np.geomspace(fmin, fmax, n_bins + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    idx = np.searchsorted(freqs, edges)
    rows = []
    for b in range(n_bins):
        lo, hi = idx[b], idx[b + 1]
        if hi > lo:
            rows.append(S[lo:hi].mean(0))
        else:
            rows.append(S[min(int(np.argmin(np.abs(freqs - centres[b]))), len(freqs) - 1)])
    return np.stack(rows), centres


def display_grid(S: np.ndarray, sr: int, *, log_freq: bool, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a (freq x ...) array reduced to at most ``max_bins``, with their frequencies in Hz.

    Linear axis: adjacent bins are averaged. Log axis: log-spaced bands
    (see :func:`log_frequency_pool`).
    """
    n_freq = S.shape[0]
    freqs = np.linspace(0.0, sr / 2, n_freq)
    if log_freq:
        return log_frequency_pool(S, freqs, min(max_bins, n_freq))
    pooled, factor = pool_time(np.moveaxis(S, 0, -1), max_bins)
    pooled = np.moveaxis(pooled, -1, 0)
    centres = np.array([freqs[i * factor:(i + 1) * factor].mean() for i in range(pooled.shape[0])])
    return pooled, centres


def _freq_axis(log_freq: bool, sr: int) -> dict:
    """y-axis settings: Hz on a linear axis, or log10(Hz) with ticks labelled in Hz."""
    if not log_freq:
        return dict(title="frequency (Hz)")
    ticks = [t for t in _TICKS_HZ if LOG_FMIN <= t <= sr / 2]
    return dict(title="frequency (Hz, log)", tickvals=np.log10(ticks).tolist(),
                ticktext=[f"{t // 1000}k" if t >= 1000 else str(t) for t in ticks])


def _layout(fig: go.Figure, *, title: str | None, height: int, margin_l: int = 60) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=14)) if title else None,
        height=height, margin=dict(l=margin_l, r=10, t=36 if title else 10, b=40),
        font=_FONT,
    )
    return fig


# ----------------------------------------------------------------- figures
LOSS_VIEWS = {"from_first": "from the first report", "all": "all, from the start",
              "relative": "relative to the final loss"}


def loglik_figure(iterations: Sequence[int], logliks: Sequence[float], *, max_iter: int | None = None,
                  height: int = 260) -> go.Figure:
    """The log-likelihood per unit of mass against iteration, on a linear axis (the EM models' live curve;
    it rises). The random start (iteration 0) is left out: far below the rest, it would flatten the curve."""
    it = np.asarray(iterations, dtype=np.int64)
    ls = np.asarray(logliks, dtype=np.float64)
    keep = np.isfinite(ls)
    if (keep & (it > 0)).any():
        keep &= it > 0
    fig = go.Figure(go.Scatter(x=it[keep], y=ls[keep], mode="lines+markers", marker=dict(size=4),
                               line=dict(width=2), name="log-likelihood",
                               hovertemplate="iteration %{x}<br>log-likelihood %{y:.6g}<extra></extra>"))
    fig.update_yaxes(title="log-likelihood per unit of mass", nticks=5, automargin=True)
    fig.update_xaxes(title="iteration", range=[0, max_iter] if max_iter else None)
    if not keep.any():
        fig.add_annotation(text="the log-likelihood appears here during a fit", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5, font=dict(color="gray"))
        fig.update_yaxes(showticklabels=False)
    return _layout(fig, title="Log-likelihood", height=height, margin_l=70)


def curve_figure(iterations: Sequence[int], values: Sequence[float], *, curve: str = "loss",
                 max_iter: int | None = None, view: str = "from_first", unit: str = "iteration") -> go.Figure:
    """:func:`loss_figure` or, for ``curve='log-likelihood'`` (the EM models), :func:`loglik_figure`.

    ``unit``: what the x axis counts, ``'iteration'`` or ``'epoch'`` (a mini-batch fit's passes over the frames).
    """
    if curve == "log-likelihood":
        return loglik_figure(iterations, values, max_iter=max_iter)
    return loss_figure(iterations, values, max_iter=max_iter, view=view, unit=unit)


def loss_figure(iterations: Sequence[int], losses: Sequence[float], *, max_iter: int | None = None,
                view: str = "from_first", height: int = 260, unit: str = "iteration") -> go.Figure:
    """Objective against iteration (or ``unit``, e.g. 'epoch') on a log y-axis (the live curve of a fit).

    ``view``: ``'from_first'`` leaves out the initial loss (iteration 0), which
    is often far above the rest and flattens the curve; ``'all'`` shows every
    report; ``'relative'`` plots ``loss / final loss - 1``, how far each report
    is from where the fit ended. A log axis cannot show a loss of 0 (a model
    that copies the data): such points are left out and the figure says so.
    """
    it = np.asarray(iterations, dtype=np.int64)
    ls = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(ls)
    zero_at = it[finite & (ls <= 0)]
    title = "objective (log scale)"
    if view == "relative" and finite.any() and ls[finite][-1] > 0:
        ls = ls / ls[finite][-1] - 1.0
        title = "loss / final loss − 1 (log)"
    elif view == "from_first" and (it > 0).any():
        keep0 = it > 0
        it, ls, finite = it[keep0], ls[keep0], finite[keep0]
    keep = finite & (ls > 0)
    fig = go.Figure(go.Scatter(x=it[keep], y=ls[keep], mode="lines+markers", marker=dict(size=4),
                               line=dict(width=2), name="loss",
                               hovertemplate=unit + " %{x}<br>%{y:.4g}<extra></extra>"))
    fig.update_yaxes(type="log", title=title, exponentformat="power", nticks=5, automargin=True)
    xr = [0, max_iter] if max_iter else None
    fig.update_xaxes(title=unit, range=xr)
    if zero_at.size:
        fig.add_annotation(text=f"loss 0 from {unit} {int(zero_at[0])}: the model copies the data",
                           showarrow=False, xref="paper", yref="paper", x=1, y=1, xanchor="right",
                           font=dict(color="crimson"))
    if not keep.any():
        if not zero_at.size:
            fig.add_annotation(text="the loss appears here during a fit", showarrow=False, xref="paper",
                               yref="paper", x=0.5, y=0.5, font=dict(color="gray"))
        fig.update_yaxes(showticklabels=False)
    return _layout(fig, title="Loss", height=height, margin_l=70)


def spectrogram_figure(S: np.ndarray, sr: int, hop_length: int, *, title: str, log_freq: bool = False,
                       top_db: float = 80.0, power: float = 1.0, height: int = 320,
                       max_frames: int = MAX_FRAMES, max_bins: int = MAX_BINS,
                       colorbar: bool = True) -> go.Figure:
    """Heatmap of a (freq x frames) magnitude spectrogram in dB (time in s, frequency in Hz)."""
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2:
        raise ValueError(f"spectrogram must be 2-D (freq x frames), got shape {S.shape}")
    pooled, factor = pool_time(S, max_frames)
    rows, freqs = display_grid(pooled, sr, log_freq=log_freq, max_bins=max_bins)
    Z = to_db(rows, top_db=top_db, power=power)
    times = (np.arange(Z.shape[1]) * factor + (factor - 1) / 2) * hop_length / sr
    y = np.log10(freqs) if log_freq else freqs
    fig = go.Figure(go.Heatmap(
        z=Z, x=times.astype(np.float32), y=y.astype(np.float32), colorscale=COLORSCALE,
        zmin=-top_db, zmax=0, showscale=colorbar,
        colorbar=dict(title=dict(text="dB"), thickness=12, len=0.9) if colorbar else None,
        hovertemplate="%{x:.2f} s<br>%{customdata:.0f} Hz<br>%{z:.1f} dB<extra></extra>",
        customdata=np.repeat(freqs[:, None], Z.shape[1], axis=1).astype(np.float32),
    ))
    fig.update_xaxes(title="time (s)")
    fig.update_yaxes(**_freq_axis(log_freq, sr))
    return _layout(fig, title=title, height=height)


def _flatten_templates(W: np.ndarray) -> tuple[np.ndarray, list[float], int]:
    """(freq x R [x kernel...]) -> (freq x R*K) with each component's kernel side by side.

    Returns the flat array, the x position of each component's centre and K.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 2:
        return W, [float(r) for r in range(W.shape[1])], 1
    n_freq, rank = W.shape[:2]
    K = int(np.prod(W.shape[2:]))
    flat = W.reshape(n_freq, rank, K).reshape(n_freq, rank * K)
    return flat, [r * K + (K - 1) / 2 for r in range(rank)], K


def templates_figure(W: np.ndarray, sr: int, *, order: Sequence[int] | None = None, log_freq: bool = False,
                     top_db: float = 60.0, height: int = 320, max_bins: int = MAX_BINS,
                     n_freq: int | None = None) -> go.Figure:
    """The templates W as a heatmap: one column per component (one block of columns per
    component for convolutive models, the kernel's shifts side by side), frequency up.

    ``n_freq`` is the number of rows of the spectrogram; templates with fewer
    rows (NMF2D patches, shifted in frequency) are drawn against relative
    frequency bins instead of Hz.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim < 2:
        raise ValueError(f"W must have at least 2 dimensions (freq x rank), got shape {W.shape}")
    relative = n_freq is not None and W.shape[0] != n_freq
    order = list(range(W.shape[1])) if order is None else list(order)
    W = W[:, order]
    flat, centres, K = _flatten_templates(W)
    if relative:
        rows, freqs = flat, np.arange(flat.shape[0], dtype=np.float64)
        log_freq = False
    else:
        rows, freqs = display_grid(flat, sr, log_freq=log_freq, max_bins=max_bins)
    # every component normalised to its own peak, so quiet templates stay visible
    comp = rows.reshape(rows.shape[0], len(order), K)
    peak = comp.max(axis=(0, 2), keepdims=True)
    comp = comp / np.where(peak > 0, peak, 1.0)
    Z = to_db(comp.reshape(rows.shape), top_db=top_db)
    y = np.log10(freqs) if log_freq else freqs
    fig = go.Figure(go.Heatmap(z=Z, y=y.astype(np.float32), colorscale=COLORSCALE, zmin=-top_db, zmax=0,
                               colorbar=dict(title=dict(text="dB"), thickness=12, len=0.9),
                               hovertemplate="column %{x}<br>%{z:.1f} dB<extra></extra>"))
    if K > 1:
        for r in range(1, len(order)):
            fig.add_vline(x=r * K - 0.5, line=dict(color="white", width=1))
    fig.update_xaxes(title="component" + (" (kernel shifts side by side)" if K > 1 else ""),
                     tickvals=centres, ticktext=[str(c) for c in order])
    if relative:
        fig.update_yaxes(title="frequency bin (relative, shifted by H)")
    else:
        fig.update_yaxes(**_freq_axis(log_freq, sr))
    return _layout(fig, title="Templates W", height=height)


def _activation_rows(H: np.ndarray) -> tuple[np.ndarray, int]:
    """(R x frames) or (R x shifts x frames) -> ((R * shifts) x frames, shifts).

    The frame axis is the last one. The frequency shifts of a 2-D model
    (NMF2D) are kept, one row each under their component: summing them would
    hide where up the spectrum each template sounds.
    """
    H = np.asarray(H, dtype=np.float64)
    if H.ndim == 1:
        return H[None, :], 1
    if H.ndim == 2:
        return H, 1
    shifts = int(np.prod(H.shape[1:-1]))
    return H.reshape(H.shape[0] * shifts, H.shape[-1]), shifts


def activations_figure(H: np.ndarray, sr: int, hop_length: int, *, order: Sequence[int] | None = None,
                       height: int = 320, max_frames: int = MAX_FRAMES) -> go.Figure:
    """The activations H as a heatmap, time across: one row per component (each scaled to its peak),
    or for a 2-D model one block of rows per component, a row per frequency shift (lowest at the top)."""
    H = np.asarray(H, dtype=np.float64)
    n_comp = H.shape[0] if H.ndim > 1 else 1
    order = list(range(n_comp)) if order is None else list(order)
    rows, shifts = _activation_rows(H[order] if H.ndim > 1 else H)
    pooled, factor = pool_time(rows, max_frames)
    # each component scaled to its own peak (over all its shifts)
    blocks = pooled.reshape(len(order), shifts, -1)
    peak = blocks.max(axis=(1, 2), keepdims=True)
    Z = (blocks / np.where(peak > 0, peak, 1.0)).reshape(pooled.shape).astype(np.float32)
    times = (np.arange(Z.shape[1]) * factor + (factor - 1) / 2) * hop_length / sr
    hover = "%{x:.2f} s<br>%{z:.2f} of the peak<extra></extra>"
    if shifts > 1:
        custom = np.repeat(np.tile(np.arange(shifts), len(order))[:, None], Z.shape[1], axis=1)
        hover = "%{x:.2f} s · shift %{customdata} bins<br>%{z:.2f} of the component's peak<extra></extra>"
    else:
        custom = None
    fig = go.Figure(go.Heatmap(z=Z, x=times.astype(np.float32), y=list(range(Z.shape[0])), colorscale=COLORSCALE,
                               zmin=0, zmax=1, colorbar=dict(title=dict(text="rel."), thickness=12, len=0.9),
                               customdata=custom, hovertemplate=hover))
    fig.update_xaxes(title="time (s)")
    centres = [r * shifts + (shifts - 1) / 2 for r in range(len(order))]
    fig.update_yaxes(title="component" + (" (a row per frequency shift)" if shifts > 1 else ""),
                     tickvals=centres, ticktext=[str(c) for c in order], autorange="reversed")
    if shifts > 1:
        for r in range(1, len(order)):
            fig.add_hline(y=r * shifts - 0.5, line=dict(color="white", width=1))
    return _layout(fig, title="Activations H", height=height)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 with the figures' Magma colour scale."""
    stops = np.array([[int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)] for c in sequential.Magma], dtype=np.float64)
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(stops) - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, len(stops) - 1)
    frac = (x - lo)[..., None]
    return np.round(stops[lo] * (1 - frac) + stops[hi] * frac).astype(np.uint8)


def component_image(S: np.ndarray, sr: int, *, log_freq: bool = False, top_db: float = 70.0,
                    ref: float | None = None, width: int = THUMB_FRAMES, height: int = THUMB_BINS,
                    scale: int = 2) -> np.ndarray:
    """A component's spectrogram as a small RGB image (low frequencies at the bottom).

    A light picture for a grid of many components: one small image each
    instead of a plotly chart per component. ``ref``
    is the peak the dB scale is relative to (the mixture's, so components are
    comparable). Returns uint8 ``(height * scale, width * scale, 3)``.
    """
    S = np.asarray(S, dtype=np.float64)
    pooled, _ = pool_time(S, width)
    rows, _ = display_grid(pooled, sr, log_freq=log_freq, max_bins=height)
    peak = float(ref) if ref else float(rows.max()) if rows.size else 0.0
    if peak > 0:
        db = 20 * np.log10(np.maximum(rows, peak * 1e-12) / peak)
    else:
        db = np.full(rows.shape, -top_db)
    # a fixed size: every card has the same picture, short or long recording, any STFT size
    rows_idx = np.round(np.linspace(0, db.shape[0] - 1, height)).astype(int)
    cols_idx = np.round(np.linspace(0, db.shape[1] - 1, width)).astype(int)
    db = db[rows_idx][:, cols_idx]
    img = colormap((np.clip(db, -top_db, 0) + top_db) / top_db)[::-1]
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    return np.ascontiguousarray(img)


# ------------------------------------------------------------------ guided
# bright colours that stand out on Magma's dark purples and yellows
SOURCE_COLOURS = ("#00e5ff", "#76ff03", "#ff4081", "#ffffff", "#ff9100", "#2979ff", "#e040fb", "#00bfa5")


def source_colour(k: int) -> str:
    """The colour of source ``k`` (marks, titles)."""
    return SOURCE_COLOURS[int(k) % len(SOURCE_COLOURS)]


def marked_spectrogram_figure(S: np.ndarray, sr: int, hop_length: int, *, title: str,
                              marks: Sequence[tuple] = (), log_freq: bool = False, top_db: float = 80.0,
                              power: float = 1.0, height: int = 360) -> go.Figure:
    """A spectrogram to mark on: :func:`spectrogram_figure` in box-select mode with the marks drawn.

    ``marks``: ``(t0, t1, f0, f1, colour, absent, label[, polygon])`` in s
    and Hz (``polygon``: the vertices ``(s, Hz)`` of a lasso mark, drawn
    instead of its bounding box); a mark "only this source" is a filled
    region with a solid outline, "absent" a dashed outline with a cross. An invisible grid of points lies over the
    heatmap so that Plotly reports box and lasso selections on it (a heatmap
    alone has no selectable points). The x axis is time in s, the y axis Hz
    (log10 Hz when ``log_freq``), so a selection's coordinates are those.
    """
    fig = spectrogram_figure(S, sr, hop_length, title=title, log_freq=log_freq, top_db=top_db, power=power,
                             height=height)
    duration = max(1, np.asarray(S).shape[-1] - 1) * hop_length / sr
    fmin = LOG_FMIN if log_freq else 0.0
    xs = np.linspace(0.0, duration, 60)
    fs = np.geomspace(fmin, sr / 2, 40) if log_freq else np.linspace(0.0, sr / 2, 40)
    gx, gy = np.meshgrid(xs, np.log10(fs) if log_freq else fs)
    fig.add_trace(go.Scatter(x=gx.ravel().astype(np.float32), y=gy.ravel().astype(np.float32), mode="markers",
                             marker=dict(size=2, opacity=0), hoverinfo="skip", showlegend=False, name="grid"))

    def y(f):
        return float(np.log10(max(float(f), fmin))) if log_freq else float(f)

    for t0, t1, f0, f1, colour, absent, label, *rest in marks:
        polygon = rest[0] if rest else None
        style = dict(line=dict(color=colour, width=2, dash="dash" if absent else "solid"), fillcolor=colour,
                     opacity=0.25 if not absent else 0.12, layer="above")
        if polygon:
            path = " L ".join(f"{float(t):.6g},{y(f):.6g}" for t, f in polygon)
            fig.add_shape(type="path", path=f"M {path} Z", **style)
        else:
            fig.add_shape(type="rect", x0=float(t0), x1=float(t1), y0=y(f0), y1=y(f1), **style)
        if absent:
            fig.add_shape(type="line", x0=float(t0), x1=float(t1), y0=y(f0), y1=y(f1),
                          line=dict(color=colour, width=1, dash="dot"))
        fig.add_annotation(x=float(t0), y=y(f1), text=str(label), showarrow=False, xanchor="left",
                           yanchor="top", font=dict(color=colour, size=11))
    fig.update_layout(dragmode="select", selectdirection="any", showlegend=False)
    return fig
