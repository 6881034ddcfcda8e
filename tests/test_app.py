"""The Streamlit app driven through ``streamlit.testing.v1.AppTest``.

Flows: the example loads on start; upload -> Run -> loss chart and one
player per component; grouping -> one player per source; bad uploads give
an error and the app keeps working; display options never refit; results
are reused for the same audio and settings; sessions are isolated. Fits are
kept tiny (2 s at 8 kHz, rank 4, 30 iterations, 512-point STFT).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

st_testing = pytest.importorskip("streamlit.testing.v1", reason="streamlit is not installed (pip install streamlit)")
pytest.importorskip("plotly", reason="plotly is not installed (pip install plotly)")
AppTest = st_testing.AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "streamlit_app.py")
TIMEOUT = 120
RANK = 4


def tone_wav(seconds: float = 2.0, sr: int = 8000, seed: int = 0, fmt: str = "WAV",
             subtype: str | None = None) -> bytes:
    """Two notes and a noise burst: three clearly different components."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.4 * np.sin(2 * np.pi * 330 * t) * (t < seconds / 2)
    y += 0.3 * np.sin(2 * np.pi * 1250 * t) * (t >= seconds / 3)
    y += 0.1 * rng.standard_normal(t.size) * ((t % 0.5) < 0.05)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def make_fast(at: AppTest, rank: int = RANK) -> AppTest:
    at.slider(key="rank").set_value(rank)
    at.number_input(key="n_iter").set_value(30)
    at.selectbox(key="n_fft").set_value(512)
    at.selectbox(key="hop_length").set_value(256)
    return at.run()


def upload(at: AppTest, name: str, data: bytes, mime: str = "audio/wav") -> AppTest:
    return at.file_uploader(key="upload").set_value((name, data, mime)).run()


def run_fit(at: AppTest) -> AppTest:
    at.button(key="run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_tab(at: AppTest, label: str) -> AppTest:
    """Switch the (lazy) results tabs, as a click on the tab does."""
    at.session_state["results_tab"] = label
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_ids(at: AppTest) -> list[str]:
    return [c.proto.id for c in at.get("plotly_chart")]


def n_audio(at: AppTest) -> int:
    return len(at.get("audio"))


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The page sets torch's thread count for the server process; give other tests theirs back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fitted():
    """An app with a short upload, fitted with rank 4."""
    at = make_fast(new_app())
    upload(at, "tones.wav", tone_wav())
    return run_fit(at)


# ------------------------------------------------------------------- flows
def test_example_loads_on_start():
    at = new_app()
    assert "Bundled example" in texts(at)
    assert n_audio(at) == 1  # the input player
    assert not errors(at)
    assert not at.button(key="run").disabled
    assert at.button(key="stop").disabled
    # limits are stated on the page
    caption = texts(at)
    assert "20 MB" in caption and "60 s" in caption
    # the input spectrogram is shown before any fit
    open_tab(at, "Spectrograms")
    assert any("fig_input" in c for c in chart_ids(at))


def test_upload_run_shows_loss_chart_and_one_player_per_component(fitted):
    at = fitted
    assert "Uploaded: tones.wav" in texts(at)
    assert len(at.get("plotly_chart")) == 1  # the loss curve (component spectrograms are images)
    assert len(at.get("image")) == RANK  # one spectrogram image per component card
    components_tab = at.tabs[0]
    # per component one player, then one per source (2 by default) and the residual
    assert len(components_tab.get("audio")) == RANK + 2 + 1
    assert n_audio(at) == 1 + RANK + 2 + 1
    assert len([s for s in at.selectbox if s.key and s.key.startswith("assign_")]) == RANK
    # every card says what it sounds like: a note name and pitch, or unpitched with its centroid
    headers = [m.value for m in at.markdown if m.value.startswith("**Component ")]
    assert len(headers) == RANK and all(" Hz" in h or " kHz" in h or h.endswith("silent") for h in headers), headers
    assert any(h.split(" · ")[1][0] in "ABCDEFG" for h in headers), headers  # the tones are pitched
    assert at.progress[0].proto.value == 100
    assert "done" in at.progress[0].proto.text
    # the other tabs run lazily when opened, without refitting
    fits = at.session_state["_fits_started"]
    open_tab(at, "Spectrograms")
    assert all(any(f in c for c in chart_ids(at)) for f in ("fig_input", "fig_recon"))
    open_tab(at, "Factors W and H")
    assert all(any(f in c for c in chart_ids(at)) for f in ("fig_W", "fig_H"))
    open_tab(at, "How it works")
    assert "Update rule" in texts(at)
    open_tab(at, "Components & sources")
    assert n_audio(at) == 1 + RANK + 2 + 1
    assert at.session_state["_fits_started"] == fits


def test_assignments_survive_switching_tabs(fitted):
    at = fitted
    at.selectbox(key="assign_0").set_value(-1).run()
    open_tab(at, "Factors W and H")
    open_tab(at, "Components & sources")
    assert at.selectbox(key="assign_0").value == -1


def test_grouping_gives_one_player_per_source(fitted):
    at = fitted
    at.number_input(key="n_sources").set_value(3).run()
    at.button(key="auto_group").click().run()
    assert not at.exception
    assert n_audio(at) == 1 + RANK + 3 + 1
    assignment = [at.selectbox(key=f"assign_{r}").value for r in range(RANK)]
    assert set(assignment) <= {-1, 0, 1, 2}
    keys = {b.key for b in at.get("download_button")}
    assert {"dl_source_0", "dl_source_1", "dl_source_2", "dl_residual", "dl_zip"} <= keys
    # moving every component to source 1 empties the others
    for r in range(RANK):
        at.selectbox(key=f"assign_{r}").set_value(0)
    at.run()
    assert not at.exception
    assert "no components" in texts(at)
    assert n_audio(at) == 1 + RANK + 3 + 1


@pytest.mark.parametrize("name, fmt, subtype, mime", [
    ("tones.flac", "FLAC", None, "audio/flac"),
    ("tones.ogg", "OGG", "VORBIS", "audio/ogg"),
    ("tones.mp3", "MP3", "MPEG_LAYER_III", "audio/mpeg"),
])
def test_upload_formats(name, fmt, subtype, mime):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    at = new_app()
    upload(at, name, tone_wav(sr=16000, fmt=fmt, subtype=subtype), mime)
    assert not at.exception and not errors(at), errors(at)
    assert f"Uploaded: {name}" in texts(at)
    assert "16000 Hz" in texts(at)


@pytest.mark.parametrize("name, data, expected", [
    ("noise.wav", np.random.default_rng(0).bytes(4096), "Could not"),
    ("empty.wav", b"", "empty"),
    ("notes.wav", b"These are my notes, not audio.\n" * 20, "Could not"),
    ("long.wav", tone_wav(seconds=61.0, sr=4000), "60"),
    ("big.wav", b"RIFF" + bytes(21 * 2**20), "20 MB"),
    ("song.mp3", b"ID3 but not really an mp3" * 10, "Could not"),
])
def test_bad_upload_shows_error_and_app_keeps_working(name, data, expected):
    at = make_fast(new_app())
    upload(at, name, data)
    assert not at.exception, [e.value for e in at.exception]
    msgs = errors(at)
    assert msgs and expected in msgs[0], msgs
    assert at.button(key="run").disabled  # nothing to fit
    # a good file afterwards works
    upload(at, "tones.wav", tone_wav())
    assert not errors(at)
    run_fit(at)
    assert n_audio(at) == 1 + RANK + 2 + 1


def test_display_options_never_refit(fitted):
    at = fitted
    fits = at.session_state["_fits_started"]
    shown = at.session_state["_shown_key"]
    at.toggle(key="log_freq").set_value(True).run()
    at.toggle(key="sort_components").set_value(False).run()
    at.slider(key="top_db").set_value(60).run()
    at.number_input(key="n_sources").set_value(3).run()
    assert not at.exception
    assert at.session_state["_fits_started"] == fits
    assert at.session_state["_shown_key"] == shown
    assert n_audio(at) == 1 + RANK + 3 + 1
    # a changed setting is not fitted until Run
    at.slider(key="rank").set_value(3).run()
    assert at.session_state["_fits_started"] == fits
    assert "press Run" in texts(at)


def test_same_audio_and_settings_reuse_the_result(fitted):
    at = fitted
    fits = at.session_state["_fits_started"]
    run_fit(at)
    assert at.session_state["_fits_started"] == fits  # cached on (audio bytes, settings)
    at.number_input(key="seed").set_value(1).run()
    run_fit(at)
    assert at.session_state["_fits_started"] == fits + 1
    at.number_input(key="seed").set_value(0).run()
    run_fit(at)
    assert at.session_state["_fits_started"] == fits + 1  # back to the first settings: still cached


def test_model_picker_comes_from_the_registry():
    from app import services

    at = new_app()
    picker = at.selectbox(key="model")
    assert list(picker.options) == [m.label for m in services.models()]
    assert {"NMF", "NMFD", "NMF2D"} <= {m.name for m in services.models()}


def test_continuity_control_follows_the_engine_and_reaches_the_fit():
    """The temporal continuity slider is offered for the models the engine accepts it for
    (NMF, NMFD; not NMF2D), is hidden while sparse activations are on, and its value is in
    the settings of the fit that runs."""
    from app import services

    accepts = {m.name: m.continuity for m in services.models()}
    assert accepts["NMF"] and accepts["NMFD"] and not accepts["NMF2D"]
    at = make_fast(new_app(), rank=3)
    assert at.slider(key="continuity").value == 0.0
    at.selectbox(key="model").set_value("NMF2D").run()
    assert "continuity" not in [w.key for w in at.slider]
    at.selectbox(key="model").set_value("NMF").run()
    at.toggle(key="sparse_on").set_value(True).run()
    assert "continuity" not in [w.key for w in at.slider]
    at.toggle(key="sparse_on").set_value(False).run()
    at.slider(key="continuity").set_value(0.2).run()
    upload(at, "tones.wav", tone_wav(seconds=1.5))
    run_fit(at)
    assert not errors(at), errors(at)
    shown = at.session_state["_results"][at.session_state["_shown_key"]]
    assert shown.settings.continuity == pytest.approx(0.2)
    assert "continuity 0.2" in services.settings_summary(shown.settings)


@pytest.mark.parametrize("model, kernel", [("NMFD", {"kernel_time": 3}),
                                           ("NMF2D", {"kernel_freq": 4, "kernel_time": 2})])
def test_convolutive_models_run(model, kernel):
    at = make_fast(new_app(), rank=3)
    at.selectbox(key="model").set_value(model).run()
    for key, value in kernel.items():
        at.number_input(key=key).set_value(value)
    at.run()
    upload(at, "tones.wav", tone_wav(seconds=1.5))
    run_fit(at)
    assert not errors(at), errors(at)
    assert n_audio(at) == 1 + 3 + 2 + 1


def test_plca_model_runs_with_a_log_likelihood_curve():
    """The EM models: no beta picker and no sparse toggle, the fit runs, the curve is the log-likelihood."""
    at = make_fast(new_app(), rank=3)
    at.selectbox(key="model").set_value("SIPLCA").run()
    assert "beta_case" not in [w.key for w in at.selectbox]
    assert "sparse_on" not in [w.key for w in at.toggle]
    upload(at, "tones.wav", tone_wav(seconds=1.5))
    run_fit(at)
    assert not errors(at), errors(at)
    assert n_audio(at) == 1 + 3 + 2 + 1
    shown = at.session_state["_results"][at.session_state["_shown_key"]]
    lls = [v for _, v in shown.losses]
    assert lls and all(v <= 0 for v in lls)
    at = open_tab(at, "How it works")
    assert "expectation-maximisation" in texts(at)


def test_a_failing_fit_is_reported_and_the_app_keeps_working():
    at = make_fast(new_app(), rank=3)
    at.selectbox(key="model").set_value("NMFD").run()
    at.number_input(key="kernel_time").set_value(30).run()  # longer than the recording's frames
    upload(at, "short.wav", tone_wav(seconds=0.5))
    run_fit(at)
    assert any("The fit failed" in e and "kernel" in e for e in errors(at)), errors(at)
    assert not at.button(key="run").disabled
    at.number_input(key="kernel_time").set_value(2).run()
    run_fit(at)
    assert not errors(at)
    assert n_audio(at) == 1 + 3 + 2 + 1


def test_result_of_an_earlier_recording_comes_back_with_it(fitted):
    at = fitted
    fits = at.session_state["_fits_started"]
    upload(at, "other.wav", tone_wav(seed=9))
    assert n_audio(at) == 1  # no result for this recording yet
    upload(at, "tones.wav", tone_wav())
    assert n_audio(at) == 1 + RANK + 2 + 1  # the cached result, without a refit
    assert at.session_state["_fits_started"] == fits


def test_fit_threads_leave_room_for_the_page(monkeypatch):
    from app import services

    monkeypatch.setenv("NMFCORE_APP_THREADS", "3")
    assert services.fit_threads() == 3
    monkeypatch.delenv("NMFCORE_APP_THREADS")
    monkeypatch.setattr(services.os, "cpu_count", lambda: 2)
    assert services.fit_threads() == 1
    monkeypatch.setattr(services.os, "cpu_count", lambda: 64)
    assert services.fit_threads() == 4


def test_beta_cases_and_how_it_works():
    at = open_tab(new_app(), "How it works")
    at.selectbox(key="beta_case").set_value("is").run()
    assert "Itakura-Saito" in texts(at)
    at.selectbox(key="beta_case").set_value("custom").run()
    at.number_input(key="beta_value").set_value(0.5).run()
    assert not at.exception
    assert "0.5" in texts(at)


def test_reference_stems_give_si_sdr(fitted):
    at = fitted
    refs = [("low.wav", tone_wav(seed=1), "audio/wav"), ("high.wav", tone_wav(seed=2), "audio/wav")]
    open_tab(at, "Evaluation")
    at.file_uploader(key="references").set_value(refs).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not errors(at), errors(at)
    frame = at.dataframe[0].value
    assert list(frame["reference"]) == ["low.wav", "high.wav"]
    assert "SI-SDR (dB)" in frame.columns


def test_bad_reference_is_an_error_not_a_crash(fitted):
    at = fitted
    open_tab(at, "Evaluation")
    at.file_uploader(key="references").set_value([("x.wav", b"nonsense" * 10, "audio/wav")]).run()
    assert not at.exception
    assert errors(at)


def test_sessions_do_not_share_audio(fitted):
    other = new_app()  # a second browser tab
    assert "Bundled example" in texts(other)
    assert "tones.wav" not in texts(other)
    assert n_audio(other) == 1
    assert len(other.session_state["_results"]) == 0


def test_nothing_is_written_to_temporary_paths(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the app must not write temporary files")

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile",
                 "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, refuse)
    at = make_fast(new_app())
    upload(at, "tones.wav", tone_wav(seed=5))
    run_fit(at)
    at.number_input(key="n_sources").set_value(3).run()
    assert not at.exception and not errors(at)
    assert n_audio(at) == 1 + RANK + 3 + 1


# ---------------------------------------------------------- service layer
def test_stop_keeps_partial_factors():
    from app import services

    audio = services.load_input(tone_wav(seconds=2.0), "tones.wav")
    settings = services.build_settings(model="NMF", rank=3, beta=1.0, n_iter=5000, tol=0.0, kernel_size=1,
                                       init="nndsvda", seed=0, sparsity_H=None, n_fft=512, hop_length=256,
                                       device="cpu")
    job = services.prepare_fit(audio, settings)
    original = job._callback

    def stop_early(iteration, loss):  # press Stop as soon as the fit reports progress
        if iteration >= 20:
            job.stop()
        return original(iteration, loss)

    job._callback = stop_early
    job.start()
    assert job.wait(timeout=60)
    assert job.error is None, job.error
    bundle = job.result
    assert bundle.stopped
    assert 20 <= bundle.separation.n_iter < 5000
    assert bundle.rank == 3


def test_export_zip_holds_stems_factors_and_settings():
    from app import services

    audio = services.load_input(tone_wav(), "tones.wav")
    settings = services.build_settings(model="NMF", rank=3, beta=1.0, n_iter=20, tol=0.0, kernel_size=1,
                                       init="nndsvda", seed=0, sparsity_H=None, n_fft=512, hop_length=256,
                                       device="cpu")
    job = services.start_fit(audio, settings)
    assert job.wait(timeout=60) and job.error is None, job.error
    data = services.export_zip(job.result, (0, 1, -1), 2, ("Low", "High"))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        assert {"stems/Low.wav", "stems/High.wav", "stems/residual.wav", "factors.npz", "settings.json"} <= names
        meta = json.loads(zf.read("settings.json"))
        assert meta["settings"]["rank"] == 3
        assert meta["sources"] == {"Low": [0], "High": [1]}
        assert meta["residual_components"] == [2]
        factors = np.load(io.BytesIO(zf.read("factors.npz")))
        assert factors["W"].shape[1] == 3
        y, sr = sf.read(io.BytesIO(zf.read("stems/Low.wav")))
        assert sr == 8000 and len(y) == 16000


def test_load_input_refuses_other_file_types():
    # the uploader's type filter stops these in the browser; the service checks again
    from app import services

    with pytest.raises(services.InputError, match="unsupported"):
        services.load_input(tone_wav(), "tones.png")


def test_result_bundle_matches_the_engine():
    from app import services
    from nmfcore import audio as na

    audio = services.load_input(tone_wav(), "tones.wav")
    settings = services.build_settings(model="NMF", rank=4, beta=1.0, n_iter=30, tol=0.0, kernel_size=1,
                                       init="nndsvda", seed=0, sparsity_H=None, n_fft=512, hop_length=256,
                                       device="cpu")
    job = services.start_fit(audio, settings, n_sources=2)
    assert job.wait(timeout=60) and job.error is None, job.error
    bundle = job.result
    assert not bundle.stopped
    assert services.component_order(bundle) == na.component_order(bundle.separation, by="pitch")
    pitches = na.component_pitches(bundle.separation)
    assert np.array_equal(services.component_pitches(bundle), pitches, equal_nan=True)
    for r, p in enumerate(pitches):  # a card names the note of a pitched component, else its centroid
        label = services.component_label(bundle, r)
        assert label.startswith(na.note_names([p])[0] + " · ") if p == p else label.startswith("unpitched · ")
    groups = na.auto_group(bundle.separation, 2)
    assert services.groups_from_assignment(services.auto_assignment(bundle, 2), 2) == [sorted(g) for g in groups]
    assert len(services.component_audio(bundle)) == 4
    y, sr = sf.read(io.BytesIO(services.component_audio(bundle)[0]))
    assert sr == 8000 and len(y) == 16000


def test_settings_refused_by_the_engine_are_a_settings_error():
    from app import services

    with pytest.raises(services.SettingsError, match="hop"):
        services.build_settings(model="NMF", rank=3, beta=1.0, n_iter=20, tol=0.0, kernel_size=1, init="nndsvda",
                                seed=0, sparsity_H=None, n_fft=512, hop_length=1024, device="cpu")
    with pytest.raises(services.SettingsError, match="rank"):
        services.build_settings(model="NMF", rank=0, beta=1.0, n_iter=20, tol=0.0, kernel_size=1, init="nndsvda",
                                seed=0, sparsity_H=None, n_fft=512, hop_length=256, device="cpu")
