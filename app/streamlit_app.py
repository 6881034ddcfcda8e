"""nmfcore: NMF source separation in the browser.

Start from the repository root with::

    streamlit run app/streamlit_app.py

This page only lays out widgets and results: computation lives in
:mod:`app.services` (the only nmfcore user), figures in :mod:`app.plots`,
session state behind the accessors of :mod:`app.state`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `streamlit run app/streamlit_app.py` only puts app/ on the path
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from app import plots, services, state, teaching  # noqa: E402
from app.state import Keys  # noqa: E402

POLL_S = 0.1           # how often the page looks at a running fit (and updates the progress bar)
REDRAW_S = 0.6         # how often the live loss chart is redrawn (a plotly redraw is the browser's heaviest work)
CARDS_KEY = "component_cards"
CARD_MIN_PX = 300      # narrowest component card (room for the player's seek bar); as many as fit
FAVICON = Path(__file__).resolve().parent / "favicon.png"  # bundled: nothing is fetched at run time
PLOT_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


# ------------------------------------------------------------------ defaults
def _general_defaults() -> dict:
    """Initial value of every settings and display widget (settings from the engine's defaults)."""
    s = services.default_settings()
    return {
        Keys.MODEL: s.model, Keys.RANK: int(s.rank), Keys.BETA_CASE: services.beta_case(s.beta),
        Keys.BETA_VALUE: float(s.beta) if services.beta_case(s.beta) == "custom" else 0.5,
        Keys.N_ITER: int(s.n_iter), Keys.TOL: float(s.tol),
        Keys.KERNEL_T: 4, Keys.KERNEL_F: 4,
        Keys.SPARSE_ON: s.sparsity_H is not None,
        Keys.SPARSITY: float(s.sparsity_H) if s.sparsity_H is not None else 0.5,
        Keys.CONTINUITY: float(s.continuity),
        Keys.INIT: s.init, Keys.SEED: int(s.seed), Keys.N_FFT: int(s.n_fft), Keys.HOP: int(s.hop_length),
        Keys.DEVICE: s.device, Keys.SOLVER: s.solver, Keys.BATCH_SIZE: int(s.batch_size),
        Keys.LOG_FREQ: True, Keys.TOP_DB: 80, Keys.SORT_COMPONENTS: True, Keys.N_SOURCES: 2,
        Keys.LOSS_VIEW: "from_first", Keys.SEG_START: 0.0, Keys.SEG_LENGTH: float(services.MAX_DURATION_S),
        Keys.GUIDED_NAMES: "Source 1, Source 2", Keys.GUIDED_SOURCE: 0, Keys.GUIDED_KIND: "only",
        Keys.GUIDED_WEIGHT: 1.0,
    }


def model_values(choice) -> dict:
    """The widget values a model starts from: the general defaults overridden by the model's own
    (``ModelSpec.defaults``); a 2-D kernel is shown as frequency shifts and frames."""
    general = _general_defaults()
    d = choice.defaults
    out = {Keys.RANK: int(d.get("rank", general[Keys.RANK])), Keys.N_ITER: int(d.get("n_iter", general[Keys.N_ITER])),
           Keys.N_FFT: int(d.get("n_fft", general[Keys.N_FFT])), Keys.HOP: int(d.get("hop_length", general[Keys.HOP])),
           Keys.KERNEL_T: general[Keys.KERNEL_T], Keys.KERNEL_F: general[Keys.KERNEL_F]}
    if "kernel_size" in d:
        k = d["kernel_size"]
        if choice.kernel_dims == 2:
            out[Keys.KERNEL_F] = services.nmf2d_shifts(k, out[Keys.N_FFT], choice.name)
            out[Keys.KERNEL_T] = int(k[-1])
        else:
            out[Keys.KERNEL_T] = int(k[-1] if isinstance(k, (tuple, list)) else k)
    return out


def initial_values() -> dict:
    values = _general_defaults()
    choice = services.model_choice(values[Keys.MODEL])
    values.update(model_values(choice))
    return values


_DEFAULT_KEYS = {"rank": (Keys.RANK,), "n_iter": (Keys.N_ITER,), "n_fft": (Keys.N_FFT,), "hop_length": (Keys.HOP,),
                 "kernel_size": (Keys.KERNEL_F, Keys.KERNEL_T)}


def _on_model_change() -> None:
    """A newly chosen model starts from its own defaults (kernel, rank, STFT); settings that only the
    previous model's defaults had changed go back to the general defaults. The others stay as they are."""
    new = services.model_choice(state.get(Keys.MODEL))
    previous = state.model_applied()
    names = set(new.defaults) | set(services.model_choice(previous).defaults if previous else ())
    values = model_values(new)
    for name in names:
        for key in _DEFAULT_KEYS.get(name, ()):
            state.set_value(key, values[key])
    state.set_model_applied(new.name)


# ------------------------------------------------------------------ sidebar
def settings_sidebar():
    """The model and fit settings; returns frozen settings, or None with an error shown."""
    sb = st.sidebar
    head, reset = sb.columns([3, 2], vertical_alignment="bottom")
    head.header("Model and fit")
    # (drawn first: it also brings the buttons' code to the browser before the Run button needs it)
    reset.button("Reset", key=Keys.RESET, on_click=_reset_settings, icon=":material/restart_alt:",
                 help="Every setting back to the chosen model's starting values.")
    choices = services.models()
    by_name = {m.name: m for m in choices}
    if state.get(Keys.MODEL) not in by_name:
        state.set_value(Keys.MODEL, choices[0].name)
    sb.selectbox("Model", list(by_name), key=Keys.MODEL, format_func=lambda n: by_name[n].label,
                 help="Every spectrogram model nmfcore offers; choosing one sets the settings it starts from.",
                 on_change=_on_model_change)
    spec = by_name[state.get(Keys.MODEL)]
    if spec.description:
        sb.caption(spec.description)
    sb.slider("Rank (number of components)", 1, 32, key=Keys.RANK)

    beta = 1.0
    if spec.uses_beta:
        sb.selectbox("Divergence β", list(services.BETA_CASES), key=Keys.BETA_CASE,
                     format_func=lambda c: services.BETA_CASES[c][0])
        case = state.get(Keys.BETA_CASE)
        if case == "custom":
            sb.number_input("β value", min_value=-2.0, max_value=4.0, step=0.1, format="%.2f", key=Keys.BETA_VALUE)
            beta = float(state.get(Keys.BETA_VALUE))
        else:
            beta = float(services.BETA_CASES[case][1])

    c1, c2 = sb.columns(2)
    c1.number_input("Iterations", min_value=10, max_value=5000, step=10, key=Keys.N_ITER)
    c2.select_slider("Tolerance", options=[0.0, 1e-5, 1e-4, 1e-3, 1e-2], key=Keys.TOL,
                     format_func=lambda t: "off" if t == 0 else f"{t:.0e}",
                     help="Stop when the relative improvement of the error drops below this; off runs all iterations.")
    solvers = services.solvers(spec.name)
    if state.get(Keys.SOLVER) not in solvers:
        state.set_value(Keys.SOLVER, solvers[0])
    if len(solvers) > 1:
        sb.selectbox("Solver", solvers, key=Keys.SOLVER, format_func=lambda n: services.SOLVER_LABELS.get(n, n),
                     help="Full batch fits the whole spectrogram at every iteration. A mini-batch solver visits "
                          "the frames in batches and counts epochs (passes over all frames) instead of "
                          "iterations; see How it works.")
        if state.get(Keys.SOLVER) != "full":
            sb.number_input("Batch size (frames)", min_value=1, max_value=100_000, step=64, key=Keys.BATCH_SIZE)

    kernel = 1
    if spec.kernel_dims:
        if spec.kernel_dims >= 2:
            k1, k2 = sb.columns(2)
            n_bins = services.freq_bins(state.get(Keys.N_FFT), spec.name)
            if int(state.get(Keys.KERNEL_F)) > n_bins:
                state.set_value(Keys.KERNEL_F, n_bins)
            k1.number_input("Frequency shifts", min_value=1, max_value=n_bins, key=Keys.KERNEL_F,
                            help="How many positions, one frequency bin apart, each template can take.")
            k2.number_input("Frames per patch", min_value=1, max_value=32, key=Keys.KERNEL_T,
                            help="How many STFT frames each template spans.")
            kernel = services.nmf2d_kernel(state.get(Keys.KERNEL_F), state.get(Keys.KERNEL_T), state.get(Keys.N_FFT),
                                           spec.name)
            sb.caption(f"Each component is a patch of {kernel[0]} frequency bins × {kernel[1]} frames that can "
                       f"sound at {int(state.get(Keys.KERNEL_F))} positions up the spectrum. Few shifts keep the "
                       "parts meaningful and the fit fast; many shifts let the activations copy the spectrogram.")
        else:
            sb.number_input("Kernel size (frames)", min_value=1, max_value=32, key=Keys.KERNEL_T)
            kernel = int(state.get(Keys.KERNEL_T))
            if spec.kernel_help:
                sb.caption(spec.kernel_help)
    main_errors = sb.empty()

    with sb.expander("More settings"):
        if spec.uses_beta:  # the EM models have Dirichlet priors instead (nmfcore.plca)
            st.toggle("Sparse activations", key=Keys.SPARSE_ON,
                      help="Constrain the Hoyer sparseness of every row of H.")
        if spec.uses_beta and state.get(Keys.SPARSE_ON):
            st.slider("Sparseness of H", 0.05, 0.95, step=0.05, key=Keys.SPARSITY)
        elif spec.continuity:
            st.slider("Temporal continuity", 0.0, 1.0, step=0.05, key=Keys.CONTINUITY,
                      help="Penalise frame-to-frame jumps of every activation (Virtanen 2007), so that a "
                           "component follows a sound that lasts. 0 is off; a small weight smooths the "
                           "activations, a large one makes them too slow to follow notes.")
        if spec.inits:
            if state.get(Keys.INIT) not in spec.inits:
                state.set_value(Keys.INIT, spec.inits[0])
            st.selectbox("Initialisation", list(spec.inits), key=Keys.INIT,
                         format_func=lambda i: services.INIT_LABELS.get(i, i),
                         help=" ".join(services.INIT_HELP[i] for i in spec.inits if i in services.INIT_HELP))
        st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key=Keys.SEED)
        f1, f2 = st.columns(2)
        f1.selectbox("STFT size", [512, 1024, 2048, 4096], key=Keys.N_FFT)
        f2.selectbox("Hop", [128, 256, 512, 1024], key=Keys.HOP)
        stft_errors = st.empty()
        devices = services.devices()
        if state.get(Keys.DEVICE) not in devices:
            state.set_value(Keys.DEVICE, devices[0])
        st.selectbox("Device", devices, key=Keys.DEVICE, format_func=services.device_label)

    sparsity = float(state.get(Keys.SPARSITY)) if spec.uses_beta and state.get(Keys.SPARSE_ON) else None
    continuity = float(state.get(Keys.CONTINUITY)) if spec.continuity and sparsity is None else 0.0
    try:
        settings = services.build_settings(
            model=spec.name, rank=state.get(Keys.RANK), beta=beta, n_iter=state.get(Keys.N_ITER),
            tol=state.get(Keys.TOL), kernel_size=kernel, init=state.get(Keys.INIT) if spec.inits else None,
            seed=state.get(Keys.SEED),
            sparsity_H=sparsity, n_fft=state.get(Keys.N_FFT), hop_length=state.get(Keys.HOP),
            device=state.get(Keys.DEVICE), continuity=continuity, solver=state.get(Keys.SOLVER),
            batch_size=state.get(Keys.BATCH_SIZE))
    except services.SettingsError as exc:
        # next to the setting it names: the STFT's in "More settings", the others under the model's
        slot = stft_errors if exc.setting in ("n_fft", "hop_length", "window") else main_errors
        slot.error(f"Settings not valid: {exc}")
        return None
    sb.caption(f"nmfcore {services.nmfcore_version()}")
    return settings


PHONE_PX = 768  # narrower than this, Streamlit folds the sidebar away: the essentials also show in the page
QUICK = {Keys.MODEL: "quick_model", Keys.RANK: "quick_rank", Keys.BETA_CASE: "quick_beta_case"}


def _on_quick_change(main_key: str, quick_key: str) -> None:
    state.set_value(main_key, state.get(quick_key))
    if main_key == Keys.MODEL:
        _on_model_change()


def quick_settings() -> None:
    """Model, rank and β in the page, shown on narrow screens only (where the sidebar is folded away);
    they edit the same settings as the sidebar."""
    by_name = {m.name: m for m in services.models()}
    for main, quick in QUICK.items():
        state.set_value(quick, state.get(main))
    st.html(f"<style>@media (min-width: {PHONE_PX}px) {{ .st-key-quick_settings {{display: none;}} }}</style>")
    with st.container(key="quick_settings"):
        c1, c2, c3 = st.columns(3)
        c1.selectbox("Model", list(by_name), key=QUICK[Keys.MODEL], format_func=lambda n: by_name[n].label,
                     on_change=_on_quick_change, args=(Keys.MODEL, QUICK[Keys.MODEL]))
        c2.slider("Rank", 1, 32, key=QUICK[Keys.RANK], on_change=_on_quick_change,
                  args=(Keys.RANK, QUICK[Keys.RANK]))
        if by_name[state.get(Keys.MODEL)].uses_beta:
            c3.selectbox("Divergence β", list(services.BETA_CASES), key=QUICK[Keys.BETA_CASE],
                         format_func=lambda c: services.BETA_CASES[c][0], on_change=_on_quick_change,
                         args=(Keys.BETA_CASE, QUICK[Keys.BETA_CASE]))
        st.caption("More settings in the sidebar (the » button at the top left).")


def _reset_settings() -> None:
    """Every setting back to the chosen model's starting values."""
    general, model = _general_defaults(), services.model_choice(state.get(Keys.MODEL))
    for key in (Keys.RANK, Keys.BETA_CASE, Keys.BETA_VALUE, Keys.N_ITER, Keys.TOL, Keys.SPARSE_ON, Keys.SPARSITY,
                Keys.CONTINUITY, Keys.SEED, Keys.N_FFT, Keys.HOP):
        state.set_value(key, general[key])
    for key, value in model_values(model).items():
        state.set_value(key, value)
    if model.inits:
        state.set_value(Keys.INIT, general[Keys.INIT] if general[Keys.INIT] in model.inits else model.inits[0])


# -------------------------------------------------------------------- input
def input_section():
    """Uploader (or the bundled example), a segment picker for long files, and a player.

    Returns LoadedAudio (the part to fit) or None, with the reason on the page.
    """
    st.markdown("#### Input")
    # the uploader's own line states its 200 MB ceiling, not the app's limit (in the caption below)
    st.html(f"<style>.st-key-{Keys.UPLOAD} [data-testid='stFileUploaderDropzoneInstructions'] "
            "{display: none;}</style>")
    # no type filter and a large widget limit: the service checks type and size, so that a refused
    # file gets a message on the page instead of a chip whose reason shows only on hover
    upload = st.file_uploader(
        "Upload a recording", key=Keys.UPLOAD, max_upload_size=services.UPLOAD_WIDGET_MB,
        help=f"{', '.join(services.UPLOAD_TYPES)}; at most {services.MAX_UPLOAD_MB} MB. Of a recording longer "
             f"than {services.MAX_DURATION_S:g} s you choose the part to separate.")
    st.caption(f"Limits: {services.MAX_UPLOAD_MB} MB per file; {services.MAX_DURATION_S:g} s of audio are "
               "separated at a time. Without an upload the bundled example is used.")
    try:
        if upload is None:
            audio = services.load_input(services.example_bytes(), "example.wav")
            title = services.EXAMPLE_TITLE
        else:
            audio = services.load_input(upload.getvalue(), upload.name)
            title = f"Uploaded: {upload.name}"
            if audio.too_long:
                audio = _segment_picker(upload, audio)
    except services.InputError as exc:
        st.error(f"**This file was not used.** {exc}")
        st.info("Nothing is loaded, so there is nothing to run: upload another file, or remove this one "
                "(✕ next to its name) to go back to the bundled example.")
        return None
    st.markdown(f"**{title}**  \n{audio.describe()}")
    st.audio(audio.data, format=audio.mime)
    if audio.silent:
        st.warning("This recording is silent: there is nothing to separate, every component would be silent.")
    return audio


def _segment_picker(upload, audio):
    """Start and length of the part of a long recording to separate."""
    total = audio.duration
    st.info(f"{upload.name} is {total:.1f} s long; up to {services.MAX_DURATION_S:g} s are separated at a "
            "time. Choose the part:")
    c1, c2 = st.columns(2)
    start_max = max(0.0, total - services.MIN_DURATION_S)
    if float(state.get(Keys.SEG_START)) > start_max:
        state.set_value(Keys.SEG_START, 0.0)
    c1.number_input("Start (s)", min_value=0.0, max_value=float(start_max), step=1.0, key=Keys.SEG_START)
    c2.number_input("Length (s)", min_value=1.0, max_value=float(services.MAX_DURATION_S), step=1.0,
                    key=Keys.SEG_LENGTH)
    return services.segment(upload.getvalue(), upload.name, float(state.get(Keys.SEG_START)),
                            float(state.get(Keys.SEG_LENGTH)))


# ---------------------------------------------------------------------- fit
def _request_stop() -> None:
    job = state.job()
    if job is not None:
        job.stop()


def _finish(job) -> None:
    """Move a finished job's result into the session cache (once)."""
    state.set_job(None)
    if job.kind == "guided":
        _finish_guided(job)
        return
    if job.error is not None:
        state.set_message("error", f"The fit failed: {job.error}")
        return
    bundle = job.result
    state.remember_result(bundle.key, bundle)
    state.set_shown_key(bundle.key)
    if bundle.stopped:
        state.set_message("warning", f"Stopped after {bundle.separation.n_iter} "
                                     f"{services.iteration_unit(bundle.settings)}s; "
                                     "showing the factors reached so far.")


def fit_section(audio, settings, controls):
    """Run/Stop buttons (in ``controls``, a container above the input and fit columns), progress and
    loss curve.

    Returns ``(bundle, progress, chart)``: the result on display (or None)
    and the placeholders :func:`follow_job` draws into while a fit runs.
    """
    st.markdown("#### Fit")
    job = state.job()
    note = None
    problem = services.fit_problem(audio, settings) if audio is not None and settings is not None else None
    if state.take_run_request() and audio is not None and settings is not None and job is None and not problem:
        key = services.result_key(audio, settings)
        cached = state.find_result(key)
        if cached is not None and not cached.stopped:
            state.set_shown_key(key)  # same audio and settings: no refit
            note = "Same recording and settings as an earlier run: result reused."
        else:
            # the worker fits while this run draws the page (one torch thread: they share the cores)
            job = services.start_fit(audio, settings, n_sources=int(state.get(Keys.N_SOURCES)))
            state.set_job(job)
            state.count_fit()
    running = job is not None
    # the buttons sit in a block of their own: the browser shows a block once the code of all its
    # elements has loaded, and the input column waits for the uploader's and the player's
    run_col, stop_col, info_col = controls.columns([1, 1, 4], vertical_alignment="center")
    run_col.button("Run", type="primary", key=Keys.RUN, on_click=state.request_run, width="stretch",
                   disabled=running or audio is None or settings is None or bool(problem),
                   icon=":material/play_arrow:")
    stop_col.button("Stop", key=Keys.STOP, disabled=not running, on_click=_request_stop, width="stretch",
                    icon=":material/stop:")
    progress = st.empty()
    chart = st.empty()
    if running or state.find_result(state.shown_key()) is not None:
        st.radio("Loss curve", list(plots.LOSS_VIEWS), key=Keys.LOSS_VIEW, format_func=plots.LOSS_VIEWS.get,
                 horizontal=True, label_visibility="collapsed")

    bundle = state.find_result(state.shown_key())
    if bundle is not None and (audio is None or bundle.audio_digest != audio.digest):
        # the result on display belongs to another recording: this one's, if it was fitted before
        bundle = state.find_result(services.result_key(audio, settings)) if audio and settings else None
    msg = state.pop_message()
    if msg is not None:
        getattr(st, msg[0])(msg[1])
    if problem and not running:
        st.warning(problem)
    if running:
        info_col.caption(f"Fitting {services.settings_summary(job.settings)}")
    elif bundle is not None:
        sep = bundle.separation
        status = "stopped" if bundle.stopped else "done"
        unit = services.iteration_unit(bundle.settings)
        progress.progress(1.0, text=f"{status}: {sep.n_iter} {unit}s in {bundle.elapsed:.2f} s")
        its, vals = zip(*bundle.losses) if bundle.losses else ((), ())
        # no key: the live chart and this one share an id scheme, so the browser updates it in place
        chart.plotly_chart(plots.curve_figure(its, vals, curve=services.curve_of(bundle.settings),
                                              max_iter=bundle.settings.n_iter, view=state.get(Keys.LOSS_VIEW),
                                              unit=unit),
                           config=PLOT_CONFIG)
        if services.reproduces_exactly(bundle):
            st.warning("The model reproduces the spectrogram exactly (loss 0): its factors are large enough to "
                       "copy the data instead of explaining it, so the components mean little. Use fewer "
                       "components, or for NMF2D fewer frequency shifts.")
        if note:
            info_col.caption(note)
        elif settings is not None and bundle.key != services.result_key(audio, settings):
            info_col.caption("Settings changed since this result: press Run to fit them.")
        else:
            info_col.caption(services.settings_summary(bundle.settings))
    else:
        info_col.caption("Press Run to factorise the spectrogram. Results stay while this tab is open; a "
                         "reload starts afresh, so download what you want to keep.")
        chart.caption("Progress and the loss curve appear here during a fit.")
    return bundle, progress, chart


def follow_job(progress, chart) -> None:
    """Draw a running fit's progress and loss curve until it ends, then show its result.

    The fit runs in a worker thread, so this loop (at the end of the page)
    only draws: a click anywhere (Stop, a display option) interrupts it
    with a rerun that redraws the page and resumes following the same fit.
    The chart is redrawn only when its figure changes: two equal figures in
    one run would be two elements with the same id.
    """
    job = state.job()
    if job is None:
        return
    drawn, shown = -1.0, None
    while not job.done:
        now = time.perf_counter()
        progress.progress(job.progress(), text=f"{services.progress_text(job)} · {job.elapsed:.1f} s")
        if now - drawn >= REDRAW_S and job.losses:
            its, vals = zip(*list(job.losses))
            fig = plots.curve_figure(its, vals, curve=services.curve_of(job.settings), max_iter=job.settings.n_iter,
                                     view=state.get(Keys.LOSS_VIEW), unit=services.iteration_unit(job.settings))
            signature = fig.to_json()
            if signature != shown:
                chart.plotly_chart(fig, config=PLOT_CONFIG)
                shown = signature
            drawn = now
        time.sleep(POLL_S)
    _finish(job)
    st.rerun()  # redraw the controls and the results of the finished fit


# ------------------------------------------------------------------ results
def display_options():
    c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="center")
    c1.toggle("Log frequency", key=Keys.LOG_FREQ)
    c2.toggle("Sort by pitch", key=Keys.SORT_COMPONENTS,
              help="Order components by their estimated pitch, low to high, then the unpitched ones "
                   "(drums, noise) by spectral centroid.")
    c3.slider("Dynamic range (dB)", 40, 120, step=10, key=Keys.TOP_DB)


def spectrogram_tab(audio, settings, bundle):
    log_freq, top_db = bool(state.get(Keys.LOG_FREQ)), float(state.get(Keys.TOP_DB))
    left, right = st.columns(2)
    if bundle is not None:
        sep, s = bundle.separation, bundle.settings
        V, sr, hop = sep.spectrogram, bundle.sr, s.hop_length
    else:
        s = settings or services.default_settings()
        V = services.input_spectrogram(audio.data, audio.name, s.n_fft, s.hop_length, s.window, s.power)
        sr, hop = audio.sr, s.hop_length
    power = s.power
    with left:
        st.plotly_chart(plots.spectrogram_figure(V, sr, hop, title="Input spectrogram", log_freq=log_freq,
                                                 top_db=top_db, power=power), key="fig_input", config=PLOT_CONFIG)
    with right:
        if bundle is None:
            st.info("The reconstruction appears here after Run.")
        else:
            st.plotly_chart(plots.spectrogram_figure(sep.reconstruction, sr, hop, title="Reconstruction WH",
                                                     log_freq=log_freq, top_db=top_db, power=power),
                            key="fig_recon", config=PLOT_CONFIG)


def factors_tab(bundle):
    sep = bundle.separation
    order = services.component_order(bundle) if state.get(Keys.SORT_COMPONENTS) else None
    left, right = st.columns(2)
    with left:
        st.plotly_chart(plots.templates_figure(sep.W, bundle.sr, order=order, log_freq=bool(state.get(Keys.LOG_FREQ)),
                                                 n_freq=sep.spectrogram.shape[0]),
                        key="fig_W", config=PLOT_CONFIG)
    with right:
        st.plotly_chart(plots.activations_figure(sep.H, bundle.sr, bundle.settings.hop_length, order=order),
                        key="fig_H", config=PLOT_CONFIG)
    st.caption("Each template (in dB) and each activation row (linear) is scaled to its own peak.")


def _ensure_assignments(bundle) -> None:
    """Components start grouped automatically; a new result regroups them."""
    if state.assignment_owner() != bundle.token:
        if state.sources_wanted() is None:
            state.set_sources_wanted(int(state.get(Keys.N_SOURCES)))
        wanted = state.sources_wanted()
        n = max(1, min(int(wanted), bundle.rank))
        state.set_value(Keys.N_SOURCES, n)
        state.set_assignments(services.auto_assignment(bundle, n))
        state.set_assignment_owner(bundle.token)


def _on_auto_group(bundle) -> None:
    state.set_assignments(services.auto_assignment(bundle, int(state.get(Keys.N_SOURCES))))


def _on_n_sources(bundle) -> None:
    n = int(state.get(Keys.N_SOURCES))
    state.set_sources_wanted(n)
    state.set_assignments([min(a, n - 1) for a in state.assignments(bundle.rank)])


def source_names(n: int) -> list[str]:
    return [f"Source {k + 1}" for k in range(n)]


def components_tab(bundle):
    sep = bundle.separation
    rank = bundle.rank
    g1, g2, g3 = st.columns([1, 1.4, 2.6], vertical_alignment="bottom")
    g1.number_input("Sources", min_value=1, max_value=max(1, rank), step=1, key=Keys.N_SOURCES,
                    on_change=_on_n_sources, args=(bundle,))
    n_sources = int(state.get(Keys.N_SOURCES))
    g2.button(f"Group automatically into {n_sources}", key=Keys.AUTO_GROUP, on_click=_on_auto_group,
              args=(bundle,), icon=":material/auto_awesome:", width="stretch")
    g3.caption("Assign each component to a source below; components set to *residual* are left out. "
               f"Spectrograms: time across, {'log ' if state.get(Keys.LOG_FREQ) else ''}frequency up "
               f"to {bundle.sr / 2000:g} kHz.")
    names = source_names(n_sources)
    options = [-1] + list(range(n_sources))
    labels = {-1: "residual", **dict(enumerate(names))}

    wavs = services.component_audio(bundle)
    order = services.component_order(bundle) if state.get(Keys.SORT_COMPONENTS) else list(range(rank))
    log_freq = bool(state.get(Keys.LOG_FREQ))
    ref = float(sep.reconstruction.max()) if sep.reconstruction.size else None
    # a grid of equal cards, as many to a row as fit
    st.html(f"<style>.st-key-{CARDS_KEY} {{display: grid !important; gap: 0.75rem; "
            f"grid-template-columns: repeat(auto-fill, minmax({CARD_MIN_PX}px, 1fr));}}</style>")
    with st.container(key=CARDS_KEY):
        for r in order:
            with st.container(border=True, key=f"card_{r}"):
                st.markdown(f"**Component {r}** · {services.component_label(bundle, r)}")
                st.image(plots.component_image(sep.component_spectrograms[r], bundle.sr, log_freq=log_freq,
                                               top_db=float(state.get(Keys.TOP_DB)), ref=ref), width="stretch")
                st.audio(wavs[r], format="audio/wav")
                st.selectbox("Source", options, key=state.assignment_key(r), format_func=labels.get,
                             label_visibility="collapsed")

    assignment = tuple(state.assignments(rank))
    st.markdown("##### Sources")
    stems, residual = services.source_audio(bundle, assignment, n_sources)
    groups = services.groups_from_assignment(assignment, n_sources)
    for k, name in enumerate(names):
        _stem_row(name, stems[k], f"components {', '.join(map(str, groups[k]))}" if groups[k] else "no components",
                  f"dl_source_{k}", services.download_name(bundle.audio_name, name))
    left = [r for r, s in enumerate(assignment) if s < 0]
    _stem_row("Residual", residual, "mixture minus all sources" + (f" (components {', '.join(map(str, left))})"
                                                                    if left else ""), "dl_residual",
              services.download_name(bundle.audio_name, "residual"))
    zip_data = services.export_zip(bundle, assignment, n_sources, tuple(names))
    st.download_button("Download all (stems, factors.npz, settings.json)", zip_data,
                       file_name=services.download_name(bundle.audio_name, "nmfcore", ".zip"), mime="application/zip",
                       key="dl_zip", icon=":material/folder_zip:", on_click="ignore", type="primary")


def _stem_row(name: str, wav: bytes, detail: str, key: str, file_name: str) -> None:
    c1, c2, c3 = st.columns([1.2, 3, 1], vertical_alignment="center")
    c1.markdown(f"**{name}**  \n{detail}")
    with c2:
        st.audio(wav, format="audio/wav")
    c3.download_button("Download", wav, file_name=file_name, mime="audio/wav",
                       key=key, icon=":material/download:", on_click="ignore", width="stretch")


def evaluation_tab(bundle):
    st.caption("Upload the true stems of this mixture (same length and rate are best) to score the "
               "sources: SI-SDR, and SDR, SIR and SAR when a BSS Eval package is installed. Each reference is "
               "matched to its best source; the mixture's own score against the reference is the baseline "
               "(what doing nothing scores), and the gain is the source's score above it.")
    files = st.file_uploader("Reference stems", type=list(services.UPLOAD_TYPES), accept_multiple_files=True,
                             key=Keys.REFERENCES, max_upload_size=services.UPLOAD_WIDGET_MB)
    if bundle is None:
        st.info("Run a separation first.")
        return
    if not files:
        return
    n_sources = int(state.get(Keys.N_SOURCES))
    try:
        rows = services.evaluate_references(bundle, tuple(state.assignments(bundle.rank)), n_sources,
                                            tuple(source_names(n_sources)),
                                            tuple((f.name, f.getvalue()) for f in files))
    except services.InputError as exc:
        st.error(str(exc))
        return
    st.dataframe(rows, hide_index=True)


def how_it_works_tab(settings, bundle):
    """The text for the fit on display, or for the settings the next Run would use."""
    if bundle is not None and (settings is None or bundle.key == state.shown_key() and settings == bundle.settings):
        used, lead = bundle.settings, "How the result on display was computed."
    else:
        used = settings if settings is not None else services.default_settings()
        lead = "How Run will compute the result with the settings in the sidebar."
    st.caption(lead)
    for paragraph in teaching.how_it_works_md(services.fit_description(used)):
        st.markdown(paragraph)


# ------------------------------------------------------------------ guided
GUIDED_PLOT_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["zoom2d", "pan2d", "autoScale2d"]}
KIND_LABELS = {"only": "only this source here", "absent": "this source absent here"}
WEIGHT_HELP = ("How sure you are of a mark. At 1 the other sources are taken out of the box entirely (for "
               "“only this source here”), or this source is (for “absent”). Below 1 a mark bends the fit "
               "without forcing silence: the excluded sources only count for less in the box, so a source "
               "that really sounds there can still take its share.")


def guided_chart_key(k: int) -> str:
    """Chart key of the spectrogram of separated source ``k`` (marks drawn on it say "not yours")."""
    return f"guided_src_{k}"


def _finish_guided(job) -> None:
    if job.error is not None:
        state.set_message("error", f"The guided separation failed: {job.error}. Your marks are kept: change "
                                   "them or the settings and press Separate again.")
        return
    state.set_guided_result(job.result)
    if job.result.stopped:
        state.set_message("warning", f"Stopped after {job.result.separation.n_iter} iterations; showing the "
                                     "sources reached so far.")


def _take_selection(chart_key: str, source: int, absent: bool, audio, log_freq: bool) -> None:
    """Turn a new box or lasso selection of a chart into marks (once per selection)."""
    event = state.get(chart_key)
    selection = event.get("selection") if isinstance(event, dict) else None
    if not selection:
        return
    signature = json.dumps(selection, sort_keys=True, default=str)
    if signature == state.seen_selection(chart_key):
        return
    state.set_seen_selection(chart_key, signature)
    kw = dict(absent=absent, weight=float(state.get(Keys.GUIDED_WEIGHT)), duration=audio.duration, sr=audio.sr)
    regions = [(services.guided_mark, box) for box in services.selection_boxes(dict(selection), log_freq=log_freq)]
    regions += [(services.guided_lasso_mark, pts)
                for pts in services.selection_lassos(dict(selection), log_freq=log_freq)]
    for make, region in regions:
        try:
            state.add_guided_mark(make(region, source, **kw))
        except services.InputError as exc:
            st.warning(str(exc))


def _overlay(marks, names, only_source: int | None = None) -> list[tuple]:
    out = []
    for m in marks:
        k = int(m["source"])
        if k >= len(names) or (only_source is not None and k != only_source):
            continue
        label = f"{names[k]}{' ✕' if m['absent'] else ''}"
        out.append((m["t0"], m["t1"], m["f0"], m["f1"], plots.source_colour(k), bool(m["absent"]), label,
                    m.get("polygon")))
    return out


def _describe_mark(m: dict, names: list[str]) -> str:
    k = int(m["source"])
    who = names[k] if k < len(names) else f"source {k + 1} (no longer named: ignored)"
    kind = f"{who} absent here" if m["absent"] else f"only {who} here"
    shape = "lasso within " if m.get("polygon") else ""
    return (f"{kind} · {shape}{m['t0']:.2f}–{m['t1']:.2f} s · {m['f0']:.0f}–{m['f1']:.0f} Hz · "
            f"confidence {m['weight']:.2f}")


def _start_guided(audio, settings, names) -> None:
    if len(names) < 2:
        st.warning("Name at least two sources (comma-separated) to separate them.")
        return
    marks = [m for m in state.guided_marks() if int(m["source"]) < len(names)]
    try:
        gs = services.guided_settings(settings, len(names))
        problem = services.fit_problem(audio, gs)
        if problem:
            st.warning(problem)
            return
        checked = services.to_marks(marks, len(names), audio)
    except services.InputError as exc:
        st.error(str(exc))
        return
    previous = state.guided_result()
    warm = previous if services.can_refine(previous, audio, gs, names) else None
    state.set_job(services.start_guided(audio, gs, names, checked, previous=warm))
    state.count_fit()


def guided_tab(audio, settings):
    """Name the sources, mark boxes on the mixture's spectrogram, separate, listen, mark again."""
    st.caption("Name the sources, pick one, and drag boxes (or lasso regions) on the mixture's spectrogram "
               "where it plays alone, or where it is silent. **Separate** fits one block of components per "
               "source that follows your marks. A lasso marks the region it encloses. On a separated source's "
               "spectrogram, drag over what is not that source's and separate again: the fit continues from "
               "the previous result.")
    st.text_input("Sources (names, comma-separated)", key=Keys.GUIDED_NAMES)
    names = services.source_names_from_text(state.get(Keys.GUIDED_NAMES))
    if not names:
        names = ["Source 1", "Source 2"]
    if int(state.get(Keys.GUIDED_SOURCE)) >= len(names):
        state.set_value(Keys.GUIDED_SOURCE, 0)
    c1, c2, c3 = st.columns([1, 1.4, 1.6], vertical_alignment="bottom")
    c1.selectbox("Mark for", list(range(len(names))), key=Keys.GUIDED_SOURCE, format_func=names.__getitem__)
    c2.radio("A box says", list(KIND_LABELS), key=Keys.GUIDED_KIND, format_func=KIND_LABELS.get)
    c3.slider("Confidence", 0.05, 1.0, step=0.05, key=Keys.GUIDED_WEIGHT, help=WEIGHT_HELP)
    st.caption(WEIGHT_HELP)

    log_freq, top_db = bool(state.get(Keys.LOG_FREQ)), float(state.get(Keys.TOP_DB))
    result = state.guided_result()
    if result is not None and result.audio_digest != audio.digest:
        result = None
    # selections made since the last run become marks before anything is drawn
    _take_selection(Keys.GUIDED_MIX, int(state.get(Keys.GUIDED_SOURCE)), state.get(Keys.GUIDED_KIND) == "absent",
                    audio, log_freq)
    if result is not None:
        for k in range(len(result.names)):
            _take_selection(guided_chart_key(k), k, True, audio, log_freq)

    if settings is None:
        st.warning("The settings in the sidebar are not valid: fix them to separate.")
        return
    running = state.job() is not None
    if state.take_separate_request() and not running:
        _start_guided(audio, settings, names)
        running = state.job() is not None

    s = settings
    V = services.input_spectrogram(audio.data, audio.name, s.n_fft, s.hop_length, s.window, s.power)
    marks = state.guided_marks()
    fig = plots.marked_spectrogram_figure(V, audio.sr, s.hop_length, title="Mixture: drag a box or a lasso to mark it",
                                          marks=_overlay(marks, names), log_freq=log_freq, top_db=top_db,
                                          power=s.power)
    st.plotly_chart(fig, key=Keys.GUIDED_MIX, on_select="rerun", selection_mode=("box", "lasso"),
                    config=GUIDED_PLOT_CONFIG)

    with st.container(key="guided_marks"):
        if not marks:
            st.caption("No marks yet. Without marks the sources are separated blindly.")
        for i, m in enumerate(marks):
            left, right = st.columns([6, 1], vertical_alignment="center")
            k = int(m["source"])
            colour = plots.source_colour(k)
            left.markdown(f"<span style='color:{colour}'>■</span> {_describe_mark(m, names)}",
                          unsafe_allow_html=True)
            right.button("Remove", key=f"guided_rm_{i}", on_click=state.remove_guided_mark, args=(i,),
                         icon=":material/delete:", width="stretch")
    b1, b2, b3 = st.columns([1, 1, 3], vertical_alignment="center")
    b1.button("Separate", type="primary", key=Keys.GUIDED_SEPARATE, on_click=state.request_separate,
              disabled=running, icon=":material/call_split:", width="stretch")
    b2.button("Clear marks", key=Keys.GUIDED_CLEAR, on_click=state.clear_guided_marks, disabled=not marks,
              icon=":material/clear_all:", width="stretch")
    if running:
        b3.caption("Separating… progress and loss curve above.")
    elif result is not None and services.can_refine(result, audio, services.guided_settings(settings, len(names)),
                                                     names):
        b3.caption("Separate again continues from the result below (warm start) with your current marks.")

    if result is None:
        return
    sep = result.separation
    st.markdown("##### Separated sources")
    how = "refined from the previous result" if result.refined else "separated"
    st.caption(f"{how}: {sep.n_iter} iterations in {result.elapsed:.2f} s · {services.settings_summary(result.settings)}")
    its, vals = zip(*result.losses) if result.losses else ((), ())
    st.plotly_chart(plots.loss_figure(its, vals, max_iter=None, view=state.get(Keys.LOSS_VIEW), height=200),
                    key="guided_loss", config=PLOT_CONFIG)
    for k, name in enumerate(result.names):
        with st.container(border=True, key=f"guided_source_{k}"):
            colour = plots.source_colour(k)
            st.markdown(f"<span style='color:{colour}'>■</span> **{name}**", unsafe_allow_html=True)
            if k in result.unmarked:
                st.info(f"{name} had no marks: no components were forced for it, it took what the other "
                        "sources' marks left.")
            c1, c2 = st.columns([4, 1], vertical_alignment="center")
            with c1:
                st.audio(result.wavs[k], format="audio/wav")
            c2.download_button("Download", result.wavs[k], file_name=services.download_name(result.audio_name, name),
                               mime="audio/wav", key=f"guided_dl_{k}", icon=":material/download:",
                               on_click="ignore", width="stretch")
            fig = plots.marked_spectrogram_figure(
                result.spectrograms[k], result.separation.sr, result.settings.hop_length,
                title=f"{name}: drag over what is not {name}", marks=_overlay(marks, list(result.names), k),
                log_freq=log_freq, top_db=top_db, power=result.settings.power, height=280)
            st.plotly_chart(fig, key=guided_chart_key(k), on_select="rerun", selection_mode=("box", "lasso"),
                            config=GUIDED_PLOT_CONFIG)


# --------------------------------------------------------------------- page
def main() -> None:
    st.set_page_config(page_title="nmfcore · NMF source separation", page_icon=str(FAVICON), layout="wide")
    services.warm_up()
    state.init(initial_values())
    state.keep_widget_values()
    settings = settings_sidebar()
    st.title("nmfcore · source separation with NMF")
    st.caption("Factorise a recording's spectrogram into templates and activations, listen to every "
               "component, group them into sources and download the stems.")
    quick_settings()
    controls = st.container()  # Run and Stop, drawn once the input is known
    top_left, top_right = st.columns([2, 3], gap="large")
    with top_left:
        audio = input_section()
    with top_right:
        bundle, progress, chart = fit_section(audio, settings, controls)
    if audio is None:
        follow_job(progress, chart)
        return
    if bundle is not None:
        _ensure_assignments(bundle)
    st.divider()
    display_options()
    labels = ["Components & sources", "Guided separation", "Spectrograms", "Factors W and H", "Evaluation",
              "How it works"]
    # lazy tabs: only the open one runs (switching tabs reruns the page; no refit)
    tabs = st.tabs(labels, key=Keys.TAB, on_change="rerun")
    with tabs[0]:
        if tabs[0].open is not False:
            if bundle is None:
                st.info("Press **Run** to separate the recording into components.")
            else:
                components_tab(bundle)
    with tabs[1]:
        if tabs[1].open is not False:
            guided_tab(audio, settings)
    with tabs[2]:
        if tabs[2].open is not False:
            spectrogram_tab(audio, settings, bundle)
    with tabs[3]:
        if tabs[3].open is not False:
            if bundle is None:
                st.info("Templates and activations appear here after Run.")
            else:
                factors_tab(bundle)
    with tabs[4]:
        if tabs[4].open is not False:
            evaluation_tab(bundle)
    with tabs[5]:
        if tabs[5].open is not False:
            how_it_works_tab(settings, bundle)
    follow_job(progress, chart)


main()
