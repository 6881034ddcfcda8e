"""Structure of the app: one nmfcore user, an engine free of streamlit, pure plot builders."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "app"
APP_FILES = sorted(APP_DIR.glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports (absolute and ``from`` imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_app_files_exist():
    names = {p.name for p in APP_FILES}
    assert {"streamlit_app.py", "services.py", "plots.py", "state.py", "__init__.py"} <= names


@pytest.mark.parametrize("path", APP_FILES, ids=lambda p: p.name)
def test_only_the_service_layer_imports_nmfcore(path):
    uses = {m for m in imported_modules(path) if m == "nmfcore" or m.startswith("nmfcore.")}
    if path.name == "services.py":
        assert uses, "app/services.py is the app's way into nmfcore"
    else:
        assert not uses, f"{path.name} imports {sorted(uses)}; go through app/services.py"


def test_plots_and_teaching_do_not_import_streamlit_or_torch():
    for name in ("plots.py", "teaching.py"):
        mods = {m.split(".")[0] for m in imported_modules(APP_DIR / name)}
        assert not mods & {"streamlit", "torch", "nmfcore"}, (name, mods)


def test_page_reaches_session_state_only_through_the_accessors():
    for path in APP_FILES:
        if path.name == "state.py":
            continue
        assert "session_state" not in path.read_text(), f"{path.name} uses st.session_state directly"


def test_cached_service_functions_draw_no_ui():
    """services.py uses streamlit for caching only (no st.error/st.write/... inside)."""
    tree = ast.parse((APP_DIR / "services.py").read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "st"}
    assert used <= {"cache_data", "cache_resource"}, used


def test_nmfcore_never_imports_streamlit():
    code = ("import sys, nmfcore, nmfcore.audio\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'plotly'))\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_nmfcore_module_imports_streamlit():
    for path in (ROOT / "nmfcore").rglob("*.py"):
        mods = {m.split(".")[0] for m in imported_modules(path)}
        assert "streamlit" not in mods, path


# ---------------------------------------------------------- plot builders
go = pytest.importorskip("plotly.graph_objects", reason="plotly is not installed (pip install plotly)")


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {
        "S": rng.random((257, 120)) ** 2,
        "W2": rng.random((257, 5)), "H2": rng.random((5, 120)),
        "W3": rng.random((257, 5, 4)), "H3": rng.random((5, 117)),
        "W4": rng.random((16, 5, 3)), "H4": rng.random((5, 242, 118)),
    }


def test_plot_builders_return_figures(arrays):
    from app import plots

    a = arrays
    figs = [
        plots.loss_figure([0, 10, 20], [3.0, 2.0, 1.5], max_iter=100),
        plots.loss_figure([], []),
        plots.spectrogram_figure(a["S"], 8000, 128, title="S"),
        plots.spectrogram_figure(a["S"], 8000, 128, title="S", log_freq=True, top_db=60),
        plots.templates_figure(a["W2"], 8000), plots.templates_figure(a["W2"], 8000, order=[4, 3, 2, 1, 0],
                                                                     log_freq=True),
        plots.templates_figure(a["W3"], 8000), plots.templates_figure(a["W4"], 8000, n_freq=257),
        plots.activations_figure(a["H2"], 8000, 128), plots.activations_figure(a["H3"], 8000, 128),
        plots.activations_figure(a["H4"], 8000, 128),
    ]
    for fig in figs:
        assert isinstance(fig, go.Figure)
        fig.to_json()  # serialisable


def test_plot_builders_are_pure(arrays):
    from app import plots

    S = arrays["S"].copy()
    plots.spectrogram_figure(S, 8000, 128, title="S", log_freq=True)
    plots.component_image(S, 8000, log_freq=True)
    np.testing.assert_array_equal(S, arrays["S"])


def test_component_image_is_a_fixed_size_rgb_picture(arrays):
    from app import plots

    for S in (arrays["S"], arrays["S"][:, :7]):  # long and very short recordings give the same size
        img = plots.component_image(S, 8000, log_freq=True, width=160, height=96, scale=2)
        assert img.shape == (192, 320, 3) and img.dtype == np.uint8
    quiet = plots.component_image(np.zeros((257, 50)), 8000)
    assert (quiet == plots.colormap(np.zeros(1))[0]).all()  # silence is the bottom colour, not an error


def test_display_reduction_keeps_figures_small():
    from app import plots

    S = np.random.default_rng(1).random((2049, 5000))
    fig = plots.spectrogram_figure(S, 44100, 256, title="long")
    z = np.asarray(fig.data[0].z)
    assert z.shape[0] <= plots.MAX_BINS and z.shape[1] <= plots.MAX_FRAMES
    thumb = plots.component_image(S, 44100)
    assert thumb.shape[:2] == (plots.THUMB_BINS * 2, plots.THUMB_FRAMES * 2)


def test_to_db_and_pooling():
    from app import plots

    db = plots.to_db(np.array([[1.0, 0.1, 0.0]]), top_db=60)
    np.testing.assert_allclose(db, [[0.0, -20.0, -60.0]], atol=1e-5)
    pooled, factor = plots.pool_time(np.arange(10.0)[None], 4)
    assert factor == 3 and pooled.shape == (1, 4)
    np.testing.assert_allclose(pooled, [[1.0, 4.0, 7.0, 9.0]])
    rows, centres = plots.log_frequency_pool(np.ones((513, 3)), np.linspace(0, 4000, 513), 64)
    assert rows.shape == (64, 3) and np.all(np.diff(centres) > 0)


def test_teaching_text_follows_beta():
    from app import teaching

    assert "Itakura-Saito" in teaching.objective_md(0.0)
    assert "Euclidean" in teaching.objective_md(2.0)
    assert "Kullback-Leibler" in teaching.objective_md(1.0)
    assert "0.5" in teaching.objective_md(0.5)
    paragraphs = teaching.how_it_works_md(teaching.FitDescription(model="NMFD", label="NMFD", beta=1.0, solver="mu",
                                                                  kernel_dims=1, kernel=(6,)))
    assert len(paragraphs) == 5 and "NMFD" in paragraphs[0] and "T = 6" in paragraphs[0]


def test_server_upload_ceiling_matches_the_uploaders():
    import tomllib

    from app import services

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    # the server takes what the uploader takes; the service refuses files over MAX_UPLOAD_MB with a message
    assert config["server"]["maxUploadSize"] == services.UPLOAD_WIDGET_MB


# ------------------------------------------------------- issue 13: a thin layer
def test_services_read_model_specs_by_their_fields():
    """The registry's ModelSpec fields are read directly: no getattr fallbacks for fields that exist."""
    tree = ast.parse((APP_DIR / "services.py").read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id in ("getattr", "hasattr")]
    assert not calls, [ast.unparse(c) for c in calls]


def test_input_spectrogram_is_the_engines():
    """The spectrogram shown before a fit is the one the fit factorises (the engine's STFT and padding)."""
    import io as _io

    import soundfile as sf

    from app import services
    from nmfcore import audio as na

    rng = np.random.default_rng(0)
    y = (0.3 * rng.standard_normal(4000)).astype(np.float32)
    buf = _io.BytesIO()
    sf.write(buf, y, 8000, format="WAV", subtype="FLOAT")
    shown = services.input_spectrogram(buf.getvalue(), "noise.wav", 512, 128)
    sep = na.separate(y, 8000, na.SeparationSettings(rank=2, n_iter=1, n_fft=512, hop_length=128))
    assert shown.shape == sep.spectrogram.shape
    np.testing.assert_allclose(shown, sep.spectrogram, rtol=1e-4, atol=1e-5)


def test_no_measurement_diaries_in_the_app():
    """Help texts explain in words; benchmark figures live in bench/README.md."""
    for path in APP_FILES:
        text = path.read_text()
        for diary in ("bench/", "setting K", "(measured)", "dB SDR", "development mixtures"):
            assert diary not in text, (path.name, diary)


# ------------------------------------------------------- issue 17: guided
def test_marked_spectrogram_draws_marks_on_the_selection_axes(arrays):
    """Marks sit where a selection with the same coordinates was made (y: Hz, or log10 Hz), the chart
    starts in box-select mode, and the input is left as it was."""
    from app import plots

    S = arrays["S"].copy()
    marks = [(0.5, 1.0, 200.0, 800.0, plots.source_colour(0), False, "voice"),
             (1.2, 1.5, 100.0, 3000.0, plots.source_colour(1), True, "piano ✕")]
    for log_freq in (False, True):
        fig = plots.marked_spectrogram_figure(S, 8000, 128, title="mix", marks=marks, log_freq=log_freq)
        assert isinstance(fig, go.Figure) and fig.layout.dragmode == "select"
        rects = [s for s in fig.layout.shapes if s.type == "rect"]
        assert len(rects) == 2 and rects[1].line.dash == "dash" and rects[0].line.color == plots.source_colour(0)
        expected = np.log10([200.0, 800.0]) if log_freq else [200.0, 800.0]
        np.testing.assert_allclose([rects[0].y0, rects[0].y1], expected)
        assert (rects[0].x0, rects[0].x1) == (0.5, 1.0)
        fig.to_json()
    np.testing.assert_array_equal(S, arrays["S"])
    assert plots.source_colour(0) != plots.source_colour(1)
