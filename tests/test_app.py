"""The Streamlit app driven through ``streamlit.testing.v1.AppTest``.

Flows: the example loads on start; upload -> Run -> loss chart and one
player per component; grouping -> one player per source; bad uploads give
an error and the app keeps working; display options never refit; results
are reused for the same audio and settings; sessions are isolated. Fits are
kept tiny (2 s at 8 kHz, rank 4, 30 iterations, 512-point STFT).
"""

from __future__ import annotations

import io
import time
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


ENGINE_WORDS = ("BytesIO", "0x", "max_duration", "n_fft", "Error opening", "Traceback")


@pytest.mark.parametrize("name, data, expected", [
    ("noise.wav", np.random.default_rng(0).bytes(4096), "could not be read as audio"),
    ("empty.wav", b"", "empty"),
    ("notes.wav", b"These are my notes, not audio.\n" * 20, "could not be read as audio"),
    ("notes.txt", b"These are my notes, not audio.\n" * 20, "use a wav"),
    ("big.wav", b"RIFF" + bytes(21 * 2**20), "20 MB"),
    ("song.mp3", b"ID3 but not really an mp3" * 10, "could not be read as audio"),
    ("click.wav", tone_wav(seconds=0.05), "at least"),
])
def test_bad_upload_shows_error_in_user_words_and_app_keeps_working(name, data, expected):
    at = make_fast(new_app())
    upload(at, name, data)
    assert not at.exception, [e.value for e in at.exception]
    msgs = errors(at)
    assert msgs and expected in msgs[0], msgs
    assert name in msgs[0] and not any(w in msgs[0] for w in ENGINE_WORDS), msgs  # the user's words
    assert "bundled example" in "\n".join(i.value for i in at.info)  # says what happens now
    assert at.button(key="run").disabled  # nothing to fit
    # a good file afterwards works
    upload(at, "tones.wav", tone_wav())
    assert not errors(at)
    run_fit(at)
    assert n_audio(at) == 1 + RANK + 2 + 1


def test_long_upload_offers_a_segment_instead_of_refusing_it():
    at = make_fast(new_app())
    upload(at, "long.wav", tone_wav(seconds=75.0, sr=4000))
    assert not at.exception and not errors(at), errors(at)
    assert at.number_input(key="segment_length").value == 60
    at.number_input(key="segment_start").set_value(30.0)
    at.number_input(key="segment_length").set_value(5.0)
    at.run()
    assert "5.0 s · 30.0–35.0 s of 75.0 s" in texts(at), texts(at)
    run_fit(at)
    assert not errors(at), errors(at)
    shown = at.session_state["_results"][at.session_state["_shown_key"]]
    assert shown.separation.mixture.shape[-1] == 5 * 4000


def test_audio_shorter_than_the_stft_is_stopped_before_run():
    at = new_app()
    upload(at, "short.wav", tone_wav(seconds=0.2, sr=8000))  # 1600 samples < the 2048-point STFT
    assert not at.exception and not errors(at), errors(at)
    assert at.button(key="run").disabled
    assert any("shorter than one STFT window" in w.value for w in at.warning), [w.value for w in at.warning]
    at.selectbox(key="n_fft").set_value(512)
    at.selectbox(key="hop_length").set_value(128).run()
    assert not at.button(key="run").disabled


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
    at = new_app()
    at.selectbox(key="model").set_value(model).run()
    make_fast(at, rank=3)
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


def test_siplca2_runs_on_its_log_frequency_axis():
    """SIPLCA2 from the picker with its own starting kernel, after a change of STFT size: it fits on the
    log-frequency axis and every player and plot is on the STFT's bins (the masks sum to the mixture)."""
    at = new_app()
    at.selectbox(key="model").set_value("SIPLCA2").run()
    make_fast(at, rank=3)
    upload(at, "tones.wav", tone_wav(seconds=1.5))
    run_fit(at)
    assert not errors(at), errors(at)
    assert n_audio(at) == 1 + 3 + 2 + 1
    shown = at.session_state["_results"][at.session_state["_shown_key"]]
    assert shown.settings.model == "SIPLCA2" and shown.settings.n_fft == 512
    sep = shown.separation
    assert sep.reconstruction.shape[0] == 512 // 2 + 1
    assert np.allclose(sep.components.sum(0).numpy(), sep.mixture.numpy(), atol=1e-4)


def test_a_kernel_longer_than_the_recording_is_stopped_before_run():
    at = new_app()
    at.selectbox(key="model").set_value("NMFD").run()
    make_fast(at, rank=3)
    at.number_input(key="kernel_time").set_value(30).run()  # longer than the recording's frames
    upload(at, "short.wav", tone_wav(seconds=0.5))
    assert at.button(key="run").disabled
    assert any("fewer than the 30 frames" in w.value for w in at.warning), [w.value for w in at.warning]
    at.number_input(key="kernel_time").set_value(2).run()
    run_fit(at)
    assert not errors(at)
    assert n_audio(at) == 1 + 3 + 2 + 1


def test_a_failing_fit_is_reported_and_the_app_keeps_working(monkeypatch):
    from nmfcore import audio as na

    separate = na.separate

    def fail(*args, **kwargs):
        raise na.AudioError("the decoder ran out of memory")

    at = make_fast(new_app(), rank=3)
    upload(at, "short.wav", tone_wav(seconds=0.5))
    monkeypatch.setattr(na, "separate", fail)
    run_fit(at)
    assert any(e == "The fit failed: the decoder ran out of memory" for e in errors(at)), errors(at)
    assert not at.button(key="run").disabled
    monkeypatch.setattr(na, "separate", separate)
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

    with pytest.raises(services.InputError, match="use a wav"):
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


# ------------------------------------------------------- issue 18 fixes
def how_text(at: AppTest) -> str:
    tab = next(t for t in at.tabs if t.label == "How it works")
    return "\n".join(m.value for m in tab.markdown)


@pytest.mark.parametrize("choices, expected, absent", [
    ({"beta_case": "euclidean"}, "hierarchical alternating least squares", "(multiplicative updates)"),
    ({"beta_case": "kl"}, "multiplicative updates", "HALS"),
    ({"beta_case": "euclidean", "sparse_on": True}, "projected gradient", "HALS"),
    ({"beta_case": "kl", "continuity": 0.2}, "Temporal continuity", "HALS"),
])
def test_how_it_works_describes_the_solver_the_engine_runs(choices, expected, absent):
    at = open_tab(new_app(), "How it works")
    for key, value in choices.items():
        widget = {"beta_case": at.selectbox, "sparse_on": at.toggle, "continuity": at.slider}[key]
        widget(key=key).set_value(value)
        at.run()
    text = how_text(at)
    assert expected in text and absent not in text, text
    assert "mask exponent" in text  # how components become sources


def test_how_it_works_writes_negative_beta_without_double_signs():
    at = open_tab(new_app(), "How it works")
    at.selectbox(key="beta_case").set_value("custom").run()
    at.number_input(key="beta_value").set_value(-1.0).run()
    text = how_text(at)
    assert "β = -1" in text
    assert "- -1" not in text and "-1-1" not in text and "(-1-1)" not in text, text
    assert r"(-2)\,\hat v^{-1}" in text


def test_how_it_works_follows_the_result_on_display(fitted):
    at = fitted  # KL-NMF
    at.selectbox(key="beta_case").set_value("euclidean").run()  # changed but not run yet
    open_tab(at, "How it works")
    text = how_text(at)
    assert "Run will compute" in "\n".join(c.value for c in at.caption)
    assert "hierarchical alternating least squares" in text


def test_nmf2d_starts_from_defaults_that_factorise():
    """Choosing NMF2D sets its own defaults (a few frequency shifts of a tall patch); they fit in seconds
    without copying the data, and the activations keep their shifts."""
    from app import plots, services

    at = new_app()
    at.selectbox(key="model").set_value("NMF2D").run()
    spec = services.model_choice("NMF2D").defaults
    assert at.number_input(key="kernel_freq").value == services.nmf2d_shifts(spec["kernel_size"], spec["n_fft"])
    assert at.number_input(key="kernel_freq").value <= 8
    assert at.selectbox(key="n_fft").value == spec["n_fft"]
    assert any("frequency bins" in c.value and "positions up the spectrum" in c.value for c in at.sidebar.caption)
    upload(at, "tones.wav", tone_wav(seconds=2.0, sr=8000))
    run_fit(at)
    assert not errors(at), errors(at)
    bundle = at.session_state["_results"][at.session_state["_shown_key"]]
    sep = bundle.separation
    V, Vh = sep.spectrogram, sep.reconstruction
    assert 1e-3 < np.linalg.norm(V - Vh) / np.linalg.norm(V) < 0.5  # explains the data without copying it
    assert bundle.elapsed < 30
    # back to NMF: its own settings again
    at.selectbox(key="model").set_value("NMF").run()
    assert at.selectbox(key="n_fft").value == 2048 and at.slider(key="rank").value == 8
    # the activations of a 2-D model: one row per component and frequency shift, none summed away
    fig = plots.activations_figure(sep.H, bundle.sr, 256)
    assert np.asarray(fig.data[0].z).shape[0] == sep.H.shape[0] * sep.H.shape[1]


def test_a_zero_loss_is_drawn_and_flagged():
    from app import plots

    fig = plots.loss_figure([0, 10, 20, 30], [5.0, 1.0, 0.0, 0.0], max_iter=200)
    assert "loss 0 from iteration 20" in fig.layout.annotations[0].text
    assert list(fig.data[0].x) == [10]  # the first report is left out by default; zeros cannot go on a log axis
    assert list(plots.loss_figure([0, 10], [5.0, 1.0], view="all").data[0].x) == [0, 10]


def test_the_live_chart_survives_a_fit_whose_loss_stops_changing(monkeypatch):
    """A fit whose reports stop changing the figure (a loss of 0 on a log axis) must not draw two
    identical charts in one run (StreamlitDuplicateElementId froze the page)."""
    from nmfcore import audio as na

    separate = na.separate

    def zero_loss(y, sr, settings, callback=None, **kw):
        for i in range(0, 60, 10):
            callback(i, 1.0 if i == 0 else 0.0)
            time.sleep(0.4)
        return separate(y, sr, settings, **kw)

    at = make_fast(new_app(), rank=2)
    upload(at, "tones.wav", tone_wav(seconds=1.0))
    monkeypatch.setattr(na, "separate", zero_loss)
    run_fit(at)
    assert not at.exception, [e.value for e in at.exception]
    assert n_audio(at) == 1 + 2 + 2 + 1


def test_sources_come_back_after_a_rank_one_result():
    at = make_fast(new_app(), rank=1)
    upload(at, "tones.wav", tone_wav(seconds=1.0))
    run_fit(at)
    assert at.number_input(key="n_sources").value == 1
    at.slider(key="rank").set_value(3).run()
    run_fit(at)
    assert at.number_input(key="n_sources").value == 2
    assert n_audio(at) == 1 + 3 + 2 + 1


def test_downloads_are_named_after_the_recording(fitted):
    names = {b.key: b.proto.url for b in fitted.get("download_button")}
    from app import services

    assert services.download_name("tones.wav", "Source 1") == "tones_Source_1.wav"
    assert services.download_name("my song.mp3", "residual") == "my_song_residual.wav"
    assert {"dl_source_0", "dl_residual", "dl_zip"} <= set(names)


def test_evaluation_shows_the_mixture_baseline_and_bss_metrics(fitted):
    from app import services

    at = fitted
    open_tab(at, "Evaluation")
    at.file_uploader(key="references").set_value([("low.wav", tone_wav(seed=1), "audio/wav")]).run()
    assert not errors(at), errors(at)
    frame = at.dataframe[0].value
    assert {"SI-SDR (dB)", "mixture SI-SDR (dB)", "SI-SDR gain (dB)"} <= set(frame.columns)
    if services.na.bss_eval_backend():
        assert {"SDR (dB)", "SIR (dB)", "SAR (dB)", "mixture SDR (dB)"} <= set(frame.columns)
    row = frame.iloc[0]
    assert row["SI-SDR gain (dB)"] == pytest.approx(row["SI-SDR (dB)"] - row["mixture SI-SDR (dB)"], abs=0.02)


def test_a_silent_recording_is_flagged():
    at = new_app()
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, np.float32), 8000, format="WAV")
    upload(at, "silence.wav", buf.getvalue())
    assert any("silent" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_setting_error_shows_next_to_the_setting():
    at = new_app()
    at.selectbox(key="n_fft").set_value(512)
    at.selectbox(key="hop_length").set_value(1024).run()
    assert at.sidebar.expander[0].error, "the STFT error belongs in 'More settings', under the STFT"
    assert "hop" in at.sidebar.expander[0].error[0].value


def test_progress_is_estimated_between_reports():
    from types import SimpleNamespace

    from app import services

    job = SimpleNamespace(settings=SimpleNamespace(n_iter=200, model="NMF", solver="full"), losses=[(0, 9.0), (10, 5.0)], times=[0.0, 10.0],
                          last=(10, 5.0), elapsed=15.0, phase="fitting", stop_requested=False)
    assert services.progress_text(job).startswith("iteration ≈15 / 200")
    job.elapsed = 100.0  # never beyond the next report
    assert services.progress_text(job).startswith("iteration ≈19 / 200")


def test_reset_returns_to_the_models_starting_values():
    at = new_app()
    at.selectbox(key="model").set_value("NMF2D").run()
    at.slider(key="rank").set_value(3)
    at.number_input(key="kernel_freq").set_value(40).run()
    at.button(key="reset_settings").click().run()
    assert at.slider(key="rank").value == 8 and at.number_input(key="kernel_freq").value == 4
    assert at.selectbox(key="model").value == "NMF2D"


def test_the_essential_settings_are_also_in_the_page_for_phones():
    at = new_app()
    assert at.selectbox(key="quick_model").value == at.selectbox(key="model").value
    at.slider(key="quick_rank").set_value(5).run()
    assert at.slider(key="rank").value == 5
    at.selectbox(key="quick_beta_case").set_value("is").run()
    assert at.selectbox(key="beta_case").value == "is"
    at.selectbox(key="quick_model").set_value("NMF2D").run()  # with the model's own defaults
    assert at.selectbox(key="model").value == "NMF2D" and at.number_input(key="kernel_freq").value == 4
    at.slider(key="rank").set_value(6).run()  # the sidebar and the page show the same value
    assert at.slider(key="quick_rank").value == 6


def test_page_says_what_a_reload_does_and_labels_fit():
    from app import services

    at = new_app()
    assert "a reload starts afresh" in texts(at)
    assert all(len(label) <= 16 for label in services.INIT_LABELS.values())
    assert not any("kernel_size" in m.description for m in services.models())


# ------------------------------------------------------------------ guided
def box_event(x, y, kind: str = "box") -> dict:
    """What st.plotly_chart reports for one box (or lasso) selection: x in s, y on the chart's y axis."""
    item = {"xref": "x", "yref": "y", "x": list(x), "y": list(y)}
    return {"selection": {"points": [], "point_indices": [], "box": [item] if kind == "box" else [],
                          "lasso": [item] if kind == "lasso" else []}}


def guided_app(names: str = "voice, piano") -> AppTest:
    at = new_app()
    make_fast(at)
    upload(at, "tones.wav", tone_wav())
    open_tab(at, "Guided separation")
    at.text_input(key="guided_names").set_value(names).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def separate(at: AppTest) -> AppTest:
    at.button(key="guided_separate").click().run()
    deadline = time.time() + TIMEOUT
    while at.session_state["_job"] is not None and time.time() < deadline:  # the page follows the fit
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_guided_selection_becomes_a_mark_once_and_can_be_removed():
    """A box dragged on the mixture's spectrogram (log-frequency axis: y is log10 Hz) becomes one mark of
    the picked source with the box's times and frequencies; it is listed, drawn, and removed on request."""
    at = guided_app()
    assert at.toggle(key="log_freq").value  # the default axis
    at.selectbox(key="guided_source").set_value(1).run()  # "piano"
    at.radio(key="guided_kind").set_value("absent")
    at.slider(key="guided_weight").set_value(0.5)
    at.session_state["guided_mix"] = box_event([0.2, 0.9], [np.log10(300.0), np.log10(1200.0)])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    marks = at.session_state["_guided_marks"]
    assert len(marks) == 1
    m = marks[0]
    assert m["source"] == 1 and m["absent"] and m["weight"] == 0.5
    assert (m["t0"], m["t1"]) == pytest.approx((0.2, 0.9))
    assert (m["f0"], m["f1"]) == pytest.approx((300.0, 1200.0), rel=1e-6)
    assert "piano absent here" in texts(at) and "0.20–0.90 s" in texts(at) and "300–1200 Hz" in texts(at)
    at.run()  # the same selection is not added again
    assert len(at.session_state["_guided_marks"]) == 1
    at.button(key="guided_rm_0").click().run()
    assert at.session_state["_guided_marks"] == []
    assert "No marks yet" in texts(at)


def test_guided_lasso_and_linear_axis_make_checked_marks():
    """A lasso becomes a polygon mark (its bounding box beside it) drawn as its outline; on a linear axis y
    is Hz; a box reaching past the recording is clipped to it; the page's marks become the engine's Mark
    objects."""
    from app import services

    at = guided_app()
    at.toggle(key="log_freq").set_value(False).run()
    lasso_t, lasso_f = [0.5, 0.9, 1.4, 0.6], [500.0, 2500.0, 900.0, 700.0]
    at.session_state["guided_mix"] = box_event(lasso_t, lasso_f, "lasso")
    at.run()
    at.session_state["guided_mix"] = box_event([1.0, 9.0], [-50.0, 9000.0])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    marks = at.session_state["_guided_marks"]
    assert [m["source"] for m in marks] == [0, 0]
    assert marks[0]["polygon"] == [list(p) for p in zip(lasso_t, lasso_f)] and "polygon" not in marks[1]
    assert (marks[0]["t0"], marks[0]["t1"], marks[0]["f0"], marks[0]["f1"]) == pytest.approx((0.5, 1.4, 500, 2500))
    assert (marks[1]["t0"], marks[1]["t1"], marks[1]["f0"], marks[1]["f1"]) == pytest.approx((1.0, 2.0, 0, 4000))
    assert "lasso within 0.50–1.40 s" in texts(at)
    # drawn as its outline: one path shape through the vertices, the box as a rectangle
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    shapes = fig["layout"]["shapes"]
    paths = [sh["path"] for sh in shapes if sh["type"] == "path"]
    assert paths == ["M 0.5,500 L 0.9,2500 L 1.4,900 L 0.6,700 Z"]
    assert [sh["type"] for sh in shapes].count("rect") == 1
    audio = services.load_input(tone_wav(), "tones.wav")
    checked = services.to_marks(marks, 2, audio)
    assert [type(m).__name__ for m in checked] == ["Mark", "Mark"]
    assert (checked[0].t0, checked[0].t1, checked[0].f0, checked[0].f1) == pytest.approx((0.5, 1.4, 500, 2500))
    assert checked[0].polygon == tuple(zip(lasso_t, lasso_f)) and checked[1].polygon is None


def test_guided_lasso_on_the_log_axis_and_outside_the_recording():
    """On the log-frequency axis a lasso's y values are log10 Hz and its edges, straight on the chart, are
    cut into LASSO_STEPS pieces (so the polygon in Hz follows them); a lasso wholly outside the recording
    is refused in words, one partly outside has its vertices moved into it."""
    from app import services

    steps = services.LASSO_STEPS
    at = guided_app()
    at.session_state["guided_mix"] = box_event([0.2, 0.8, 0.5], [np.log10(200.0), np.log10(400.0),
                                                                 np.log10(3200.0)], "lasso")
    at.run()
    at.session_state["guided_mix"] = box_event([5.0, 6.0, 5.5], [2.0, 3.0, 2.5], "lasso")
    at.run()
    assert any("lasso lies outside the recording" in w.value for w in at.warning)
    at.session_state["guided_mix"] = box_event([1.5, 3.0, 1.8], [np.log10(300.0), np.log10(300.0), 5.0], "lasso")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    marks = at.session_state["_guided_marks"]
    assert len(marks) == 2
    corners = [(0.2, 200.0), (0.8, 400.0), (0.5, 3200.0)]
    expected = []
    for (ta, fa), (tb, fb) in zip(corners, corners[1:] + corners[:1]):  # straight in (s, log10 Hz)
        expected += [(ta + k / steps * (tb - ta), fa * (fb / fa) ** (k / steps)) for k in range(steps)]
    np.testing.assert_allclose(marks[0]["polygon"], expected, rtol=1e-6)
    assert len(marks[1]["polygon"]) >= 3
    poly = np.array(marks[1]["polygon"])
    assert poly[:, 0].max() == 2.0 and poly[:, 1].max() == 4000.0  # moved into the recording
    np.testing.assert_allclose(poly[0], [1.5, 300.0], rtol=1e-6)


def test_guided_box_outside_the_recording_is_refused_in_words():
    at = guided_app()
    at.session_state["guided_mix"] = box_event([5.0, 6.0], [2.0, 3.0])
    at.run()
    assert not at.exception
    assert at.session_state["_guided_marks"] == []
    assert any("outside the recording" in w.value for w in at.warning)


def test_guided_separate_gives_one_player_per_source_then_refines():
    """Separate: one player and download per named source, a note for the source without marks; a mark
    on a separated source's spectrogram ("not yours") and Separate again warm-start from the result."""
    at = guided_app("voice, piano, drums")
    at.session_state["guided_mix"] = box_event([0.05, 0.6], [np.log10(250.0), np.log10(450.0)])
    at.run()
    at.selectbox(key="guided_source").set_value(1).run()
    at.session_state["guided_mix"] = box_event([1.1, 1.9], [np.log10(1000.0), np.log10(1600.0)])
    at.run()
    assert len(at.session_state["_guided_marks"]) == 2
    separate(at)
    result = at.session_state["_guided_result"]
    assert result is not None and result.names == ("voice", "piano", "drums") and not result.refined
    assert len(at.get("audio")) == 1 + 3  # the input, then one player per source
    assert any("drums had no marks" in i.value for i in at.info)
    # "this part is not voice's": a selection on voice's own spectrogram
    at.session_state["guided_src_0"] = box_event([1.2, 1.8], [np.log10(900.0), np.log10(1800.0)])
    at.run()
    marks = at.session_state["_guided_marks"]
    assert len(marks) == 3 and marks[-1]["source"] == 0 and marks[-1]["absent"]
    separate(at)
    again = at.session_state["_guided_result"]
    assert again is not result and again.refined
    assert len(again.separation.marks) == 3
    assert len(at.get("audio")) == 1 + 3


def test_a_mini_batch_solver_is_chosen_for_nmf_and_its_curve_counts_epochs():
    """The solver picker offers full batch and the mini-batch solvers for NMF only; the chosen one and its
    batch size reach the fit, How it works explains it, and the loss curve's x axis counts epochs."""
    from app import services

    at = make_fast(new_app(), rank=3)
    assert list(at.selectbox(key="solver").options) == [services.SOLVER_LABELS[n] for n in services.solvers("NMF")]
    assert "batch_size" not in [w.key for w in at.number_input]  # full batch: no batch size
    at.selectbox(key="solver").set_value("asag_mu").run()
    at.number_input(key="batch_size").set_value(16).run()
    open_tab(at, "How it works")
    text = how_text(at)
    assert "Mini-batch solver" in text and "asag_mu" in text and "batches of 16 frames" in text, text
    assert "hierarchical alternating least squares" not in text
    open_tab(at, "Components & sources")
    upload(at, "tones.wav", tone_wav(seconds=1.5))
    run_fit(at)
    assert not errors(at), errors(at)
    shown = at.session_state["_results"][at.session_state["_shown_key"]]
    assert shown.settings.solver == "asag_mu" and shown.settings.batch_size == 16
    assert [i for i, _ in shown.losses] == list(range(len(shown.losses)))  # one loss per epoch
    assert "epochs in" in at.progress[0].proto.text
    (chart,) = at.get("plotly_chart")
    fig = json.loads(chart.proto.spec)
    assert fig["layout"]["xaxis"]["title"]["text"] == "epoch"
    assert "solver asag_mu (batches of 16 frames)" in services.settings_summary(shown.settings)
    # other models fit the whole spectrogram: no picker, and the solver goes back to full batch
    at.selectbox(key="model").set_value("NMFD").run()
    assert "solver" not in [w.key for w in at.selectbox]
    assert services.solvers("NMFD") == ["full"]


def test_a_mini_batch_solver_with_sparse_activations_is_a_settings_error():
    at = make_fast(new_app(), rank=3)
    at.selectbox(key="solver").set_value("gsg_mu").run()
    at.toggle(key="sparse_on").set_value(True).run()
    assert any("solver='gsg_mu'" in e and "sparsity_H" in e for e in errors(at)), errors(at)
