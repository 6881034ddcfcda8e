"""Named accessors for the app's session state.

The page never indexes ``st.session_state`` with a literal: every key lives
here, is initialised once per session by :func:`init`, and is read or
written through a function with a name. Widget keys are listed in
:class:`Keys` so the page and the tests address widgets by the same names.

Everything here is per session (Streamlit keeps one ``session_state`` per
browser tab), so two users never see each other's audio or results.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import streamlit as st

__all__ = ["Keys", "init", "keep_widget_values", "get", "set_value", "results", "remember_result", "find_result",
           "shown_key", "set_shown_key", "job", "set_job", "request_run", "take_run_request", "fits_started",
           "count_fit",
           "assignment_key", "assignments", "set_assignments", "sources_wanted", "set_sources_wanted", "model_applied",
           "set_model_applied", "assignment_owner",
           "set_assignment_owner", "message", "set_message", "pop_message", "guided_marks", "add_guided_mark",
           "remove_guided_mark", "clear_guided_marks", "seen_selection", "set_seen_selection", "guided_result",
           "set_guided_result", "request_separate", "take_separate_request"]

MAX_RESULTS = 4  # fitted results kept per session (the oldest is dropped first)


class Keys:
    """Session-state keys. Widget keys are the ones passed as ``key=`` to widgets."""

    # input widgets
    SOURCE = "input_source"          # "example" | "upload"
    UPLOAD = "upload"                # file_uploader
    REFERENCES = "references"        # file_uploader, multiple files
    # settings widgets
    MODEL = "model"
    RANK = "rank"
    BETA_CASE = "beta_case"          # "kl" | "euclidean" | "is" | "custom"
    BETA_VALUE = "beta_value"        # free beta (used when BETA_CASE == "custom")
    N_ITER = "n_iter"
    TOL = "tol"
    KERNEL_T = "kernel_time"
    KERNEL_F = "kernel_freq"
    SPARSE_ON = "sparse_on"
    SPARSITY = "sparsity_H"
    CONTINUITY = "continuity"        # temporal continuity weight (0: off)
    INIT = "init"
    SEED = "seed"
    N_FFT = "n_fft"
    HOP = "hop_length"
    DEVICE = "device"
    SOLVER = "solver"                # "full" or a mini-batch solver of nmfcore.minibatch (NMF only)
    BATCH_SIZE = "batch_size"        # frames per batch of a mini-batch solver
    # display widgets (never refit)
    LOG_FREQ = "log_freq"
    TOP_DB = "top_db"
    SORT_COMPONENTS = "sort_components"
    N_SOURCES = "n_sources"
    TAB = "results_tab"              # the open results tab (tabs run lazily)
    LOSS_VIEW = "loss_view"          # "from_first" | "all" | "relative"
    SEG_START = "segment_start"      # start (s) of the part of a long recording to separate
    SEG_LENGTH = "segment_length"    # its length (s)
    # guided separation
    GUIDED_NAMES = "guided_names"    # text_input: the sources' names, comma-separated
    GUIDED_SOURCE = "guided_source"  # selectbox: index of the source the next mark is for
    GUIDED_KIND = "guided_kind"      # radio: "only" | "absent"
    GUIDED_WEIGHT = "guided_weight"  # slider: the next mark's confidence in (0, 1]
    GUIDED_MIX = "guided_mix"        # plotly_chart (box/lasso selection) of the mixture's spectrogram
    GUIDED_SEPARATE = "guided_separate"  # button
    GUIDED_CLEAR = "guided_clear"    # button: remove every mark
    # buttons
    RUN = "run"
    STOP = "stop"
    AUTO_GROUP = "auto_group"
    RESET = "reset_settings"
    # internal (not widgets)
    RESULTS = "_results"             # OrderedDict result key -> ResultBundle
    SHOWN = "_shown_key"             # key of the result on display
    JOB = "_job"                     # FitJob running or just finished, or None
    FITS = "_fits_started"           # number of fits this session started
    ASSIGN_OWNER = "_assign_owner"   # result key the component assignments belong to
    MESSAGE = "_message"             # (level, text) to show once after a rerun
    RUN_REQUEST = "_run_request"     # Run was clicked; the page starts the fit in this run
    SOURCES_WANTED = "_sources_wanted"  # sources the user asked for (a rank-1 result shows fewer)
    MODEL_APPLIED = "_model_applied"    # the model whose own defaults the settings were last set from
    GUIDED_MARKS = "_guided_marks"      # list of marks (the engine's JSON form: source index, s, Hz, ...)
    GUIDED_SEEN = "_guided_seen"        # chart key -> the last selection turned into marks
    GUIDED_RESULT = "_guided_result"    # the guided separation on display (GuidedBundle) or None
    GUIDED_REQUEST = "_guided_request"  # Separate was clicked; the page starts the fit in this run


def init(defaults: Mapping[str, Any]) -> None:
    """Give every key its initial value, once per session.

    ``defaults`` holds the initial values of the settings widgets (they come
    from the service layer); widgets are then created without ``value=`` so
    that session state is the single source of their value.
    """
    ss = st.session_state
    for key, value in defaults.items():
        if key not in ss:
            ss[key] = value
    for key, factory in ((Keys.RESULTS, OrderedDict), (Keys.SHOWN, lambda: None), (Keys.JOB, lambda: None),
                         (Keys.FITS, lambda: 0), (Keys.ASSIGN_OWNER, lambda: None),
                         (Keys.MESSAGE, lambda: None), (Keys.RUN_REQUEST, lambda: False),
                         (Keys.SOURCES_WANTED, lambda: None), (Keys.MODEL_APPLIED, lambda: None),
                         (Keys.GUIDED_MARKS, list), (Keys.GUIDED_SEEN, dict), (Keys.GUIDED_RESULT, lambda: None),
                         (Keys.GUIDED_REQUEST, lambda: False)):
        if key not in ss:
            ss[key] = factory()


# widgets whose value must survive runs in which they are not drawn (a hidden
# tab, a setting of another model): Streamlit forgets such widget values
# unless they are written back before the widget is created.
PERSISTENT = (Keys.MODEL, Keys.RANK, Keys.BETA_CASE, Keys.BETA_VALUE, Keys.N_ITER, Keys.TOL, Keys.KERNEL_T,
              Keys.KERNEL_F, Keys.SPARSE_ON, Keys.SPARSITY, Keys.INIT, Keys.SEED, Keys.N_FFT, Keys.HOP,
              Keys.DEVICE, Keys.LOG_FREQ, Keys.TOP_DB, Keys.SORT_COMPONENTS, Keys.N_SOURCES, Keys.LOSS_VIEW,
              Keys.SEG_START, Keys.SEG_LENGTH, Keys.CONTINUITY, Keys.GUIDED_NAMES, Keys.GUIDED_SOURCE,
              Keys.GUIDED_KIND, Keys.GUIDED_WEIGHT, Keys.SOLVER, Keys.BATCH_SIZE)


def keep_widget_values() -> None:
    """Write every persistent widget value (and the source selectors) back to itself.

    Call at the top of every run, before any widget is drawn.
    """
    ss = st.session_state
    for key in list(PERSISTENT) + [k for k in ss if isinstance(k, str) and k.startswith("assign_")]:
        if key in ss:
            ss[key] = ss[key]


def get(key: str, default: Any = None) -> Any:
    """The value of a widget (or any key) by its :class:`Keys` name."""
    return st.session_state.get(key, default)


def set_value(key: str, value: Any) -> None:
    """Set a widget's value (only valid before the widget is drawn in this run, or in a callback)."""
    st.session_state[key] = value


# ------------------------------------------------------------------ results
def results() -> "OrderedDict[str, Any]":
    return st.session_state[Keys.RESULTS]


def remember_result(key: str, bundle: Any) -> None:
    """Keep a fitted result under its key (audio bytes + settings), dropping the oldest beyond MAX_RESULTS."""
    store = results()
    store[key] = bundle
    store.move_to_end(key)
    while len(store) > MAX_RESULTS:
        store.popitem(last=False)


def find_result(key: str | None) -> Any:
    if key is None:
        return None
    return results().get(key)


def shown_key() -> str | None:
    return st.session_state[Keys.SHOWN]


def set_shown_key(key: str | None) -> None:
    st.session_state[Keys.SHOWN] = key


# ---------------------------------------------------------------------- fit
def job() -> Any:
    return st.session_state[Keys.JOB]


def set_job(value: Any) -> None:
    st.session_state[Keys.JOB] = value


def request_run() -> None:
    """Run was clicked (button callback); :func:`take_run_request` reads it once."""
    st.session_state[Keys.RUN_REQUEST] = True


def take_run_request() -> bool:
    requested = bool(st.session_state[Keys.RUN_REQUEST])
    st.session_state[Keys.RUN_REQUEST] = False
    return requested


def fits_started() -> int:
    return st.session_state[Keys.FITS]


def count_fit() -> None:
    st.session_state[Keys.FITS] += 1


# ------------------------------------------------------------------ grouping
def assignment_key(component: int) -> str:
    """Widget key of the source selector of one component."""
    return f"assign_{component}"


def assignments(rank: int) -> list[int]:
    """Source index of every component (-1: left to the residual)."""
    return [int(st.session_state.get(assignment_key(i), -1)) for i in range(rank)]


def set_assignments(values: list[int]) -> None:
    """Set the source selectors (call before they are drawn, or from a callback); drop extra ones."""
    ss = st.session_state
    for i, v in enumerate(values):
        ss[assignment_key(i)] = int(v)
    i = len(values)
    while assignment_key(i) in ss:
        del ss[assignment_key(i)]
        i += 1


def sources_wanted() -> int | None:
    """The number of sources the user last chose (None: not chosen yet)."""
    return st.session_state[Keys.SOURCES_WANTED]


def set_sources_wanted(n: int) -> None:
    st.session_state[Keys.SOURCES_WANTED] = int(n)


def model_applied() -> str | None:
    return st.session_state[Keys.MODEL_APPLIED]


def set_model_applied(name: str) -> None:
    st.session_state[Keys.MODEL_APPLIED] = name


def assignment_owner() -> str | None:
    return st.session_state[Keys.ASSIGN_OWNER]


def set_assignment_owner(key: str | None) -> None:
    st.session_state[Keys.ASSIGN_OWNER] = key


# ------------------------------------------------------------------ messages
def message() -> tuple[str, str] | None:
    return st.session_state[Keys.MESSAGE]


def set_message(level: str, text: str) -> None:
    """Queue a message (level: 'info' | 'warning' | 'error' | 'success') for the next run."""
    st.session_state[Keys.MESSAGE] = (level, text)


def pop_message() -> tuple[str, str] | None:
    msg = st.session_state[Keys.MESSAGE]
    st.session_state[Keys.MESSAGE] = None
    return msg


# ------------------------------------------------------------------ guided
def guided_marks() -> list[dict]:
    """The marks drawn so far, oldest first (each a dict in the engine's JSON form)."""
    return list(st.session_state[Keys.GUIDED_MARKS])


def add_guided_mark(mark: dict) -> None:
    st.session_state[Keys.GUIDED_MARKS] = guided_marks() + [dict(mark)]


def remove_guided_mark(index: int) -> None:
    marks = guided_marks()
    if 0 <= index < len(marks):
        del marks[index]
    st.session_state[Keys.GUIDED_MARKS] = marks


def clear_guided_marks() -> None:
    st.session_state[Keys.GUIDED_MARKS] = []


def seen_selection(chart: str) -> str | None:
    """The last selection of a chart already turned into marks (its JSON), so it is not added twice."""
    return st.session_state[Keys.GUIDED_SEEN].get(chart)


def set_seen_selection(chart: str, signature: str) -> None:
    st.session_state[Keys.GUIDED_SEEN] = {**st.session_state[Keys.GUIDED_SEEN], chart: signature}


def guided_result() -> Any:
    return st.session_state[Keys.GUIDED_RESULT]


def set_guided_result(bundle: Any) -> None:
    st.session_state[Keys.GUIDED_RESULT] = bundle


def request_separate() -> None:
    """Separate was clicked (button callback); :func:`take_separate_request` reads it once."""
    st.session_state[Keys.GUIDED_REQUEST] = True


def take_separate_request() -> bool:
    requested = bool(st.session_state[Keys.GUIDED_REQUEST])
    st.session_state[Keys.GUIDED_REQUEST] = False
    return requested
