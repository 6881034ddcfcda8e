import pytest
import torch

# Tests use small tensors, for which one intra-op thread is fastest; with more,
# OpenMP spin-waits stall every op (a 0.01 ms conv1d took 15 ms) whenever the
# 2-core machine is shared with other processes.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _reports_at_checks_only(monkeypatch):
    """Fits report at their checks only, however slow the machine: tests that count
    callback iterations stay deterministic (tests/test_fit_loop.py turns the timed
    reports back on where it tests them)."""
    import nmfcore._fit

    monkeypatch.setattr(nmfcore._fit, "REPORT_SECONDS", None)


@pytest.fixture
def gen():
    """A seeded torch.Generator: tests never touch the global RNG."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def mix_file(tmp_path):
    """A 1 s two-source mixture (``mix.wav``) and its references (``ref_low.wav``, ``ref_high.wav``)
    in tmp_path; the path of the mixture (the CLI tests)."""
    from _audio_signals import SR, two_sources

    from nmfcore.audio import write_audio

    mix, refs = two_sources(seconds=1.0)
    path = write_audio(tmp_path / "mix.wav", mix, SR)
    for name, ref in zip(("low", "high"), refs):
        write_audio(tmp_path / f"ref_{name}.wav", ref, SR)
    return path


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
