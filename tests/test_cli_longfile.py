"""``nmfcore separate`` with --solver, --batch-size and the block-by-block path of --long-file.

Oracles: the files written (sources and residual sum to the input, to
16-bit rounding), path equivalence with :func:`nmfcore.audio.longfile.separate_file`
of the same settings, the summary, the exit status and one ``error:`` line.
"""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from _audio_signals import SR, two_sources

from nmfcore.audio import SeparationSettings, load_audio
from nmfcore.audio.longfile import separate_file
from nmfcore.cli import main

FAST = ["--n-fft", "256", "--hop", "64", "--iter", "15", "--tol", "0"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def song(tmp_path):
    """A 2 s stereo two-source mixture as 32-bit float WAV."""
    mix, _ = two_sources(seconds=2.0)
    y = torch.cat([mix, 0.6 * mix])
    path = tmp_path / "song.wav"
    sf.write(path, y.numpy().T, SR, subtype="FLOAT")
    return path


def test_a_file_longer_than_long_file_is_separated_block_by_block(tmp_path, song, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["separate", song, "-o", out, "--rank", 4, "--groups", "0,1;2", "--components",
                             "--long-file", 1.5, "--batch-size", 40, *FAST], capsys)
    assert code == 0, err
    assert "note: " in err and "more than --long-file 1.5 s" in err and "mu_batch" in err
    assert "15 epochs in" in stdout  # the report
    assert "/15 [" in stdout and "epoch/s" in stdout  # the progress bar, per epoch
    folder = out / "song"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["long_file"] is True and summary["iteration_unit"] == "epoch"
    assert summary["settings"]["solver"] == "mu_batch" and summary["settings"]["batch_size"] == 40
    assert summary["n_iter"] == 15 and len(summary["losses"]) == 16 and summary["duration_s"] == 2.0
    mix, _ = load_audio(song)
    stems = [load_audio(folder / f"{n}.wav")[0] for n in ("source1", "source2", "residual")]
    assert float((sum(stems) - mix).abs().max()) < 4 / 2 ** 15
    comps = sum(load_audio(p)[0] for p in sorted((folder / "components").iterdir()))
    assert float((comps - mix).abs().max()) < 5 / 2 ** 15
    # path equivalence: the stems are those of separate_file with the same settings
    sep = separate_file(song, SeparationSettings.from_dict(summary["settings"]))
    ref = torch.cat([c for _, c, _ in sep.source_blocks([[0, 1], [2]])], -1)
    assert float((stems[0] - ref[0]).abs().max()) < 2 / 2 ** 15
    assert summary["final_loss"] == pytest.approx(sep.losses[-1][1], rel=1e-5)


def test_a_mini_batch_solver_in_memory_below_the_threshold(tmp_path, song, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["separate", song, "-o", out, "--rank", 3, "--solver", "asag_mu", "--batch-size", 32,
                             *FAST, "-q"], capsys)
    assert code == 0, err
    assert "note: " not in err and "15 epochs" in stdout and "epoch/s" not in stdout  # -q: no bar
    summary = json.loads((out / "song" / "summary.json").read_text())
    assert summary["long_file"] is False and summary["settings"]["solver"] == "asag_mu"
    assert summary["losses"][-1][1] < summary["losses"][0][1]
    mix, _ = load_audio(song)
    stems = sum(load_audio(out / "song" / f"source{j}.wav")[0] for j in (1, 2))
    assert float((stems - mix).abs().max()) < 3 / 2 ** 15


def test_long_path_input_above_full_scale_to_flac_takes_one_gain(tmp_path, capsys):
    mix, _ = two_sources(seconds=1.0)
    path = tmp_path / "loud.wav"
    sf.write(path, (3 * mix).numpy().T, SR, subtype="FLOAT")
    out = tmp_path / "out"
    code, _, err = run(["separate", path, "-o", out, "--rank", 2, "--long-file", 0, "--format", "flac", *FAST, "-q"],
                       capsys)
    assert code == 0, err
    summary = json.loads((out / "loud" / "summary.json").read_text())
    assert summary["input_peak"] == pytest.approx(float(3 * mix.abs().max()))
    gain = summary["output_gain"]
    assert 0 < gain < 1
    stems = sum(load_audio(out / "loud" / f"source{j}.flac")[0] for j in (1, 2))
    assert float((stems - gain * 3 * mix).abs().max()) < 4 / 2 ** 15


@pytest.mark.parametrize("argv,match", [
    (["--solver", "sgd"], "argument --solver: invalid choice: 'sgd'"),
    (["--batch-size", 0], "--batch-size 0 must be at least 1"),
    (["--long-file", -1], "--long-file -1 must be a number of seconds >= 0"),
    (["--solver", "asg_mu", "--model", "NMFD", "--kernel", 3], "--solver asg_mu is a mini-batch solver of NMF: "
                                                                "not with --model NMFD"),
    (["--solver", "gsg_mu", "--sparsity", 0.5], "not with --sparsity"),
    (["--long-file", 1, "--model", "NMFD", "--kernel", 3], "only --model NMF is fitted that way"),
    (["--long-file", 1, "--model", "PLCA"], "only --model NMF is fitted that way"),
    (["--long-file", 1, "--sr", 16000], "resampling to --sr 16000 is not done block by block"),
    (["--long-file", 1, "--continuity", 0.1], "--continuity is not available to the mini-batch solvers"),
    (["--long-file", 1, "--marks", "marks.json"], "--marks (guided separation) needs the whole spectrogram"),
    (["--long-file", 1, "--max-duration", 1.5], "more than max_duration=1.5 s"),
])
def test_long_path_and_solver_errors_are_one_line(tmp_path, song, capsys, argv, match):
    out = tmp_path / "out"
    code, _, err = run(["separate", song, "-o", out, "--rank", 2, *FAST, "-q", *argv], capsys)
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("note: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0] and "Traceback" not in err
    assert not (out / "song").exists() and not list(out.glob(".song.partial-*"))


def test_nan_in_a_long_file_is_one_line_and_leaves_no_run(tmp_path, capsys):
    mix, _ = two_sources(seconds=1.0)
    y = mix.numpy().copy()
    y[0, 3000] = np.nan
    path = tmp_path / "bad.wav"
    sf.write(path, y.T, SR, subtype="FLOAT")
    out = tmp_path / "out"
    code, _, err = run(["separate", path, "-o", out, "--long-file", 0, *FAST, "-q"], capsys)
    assert code == 2 and "error: " in err and "NaN or infinite samples" in err and "sample 3000" in err
    assert not (out / "bad").exists() and not list(out.glob(".bad.partial-*"))


def test_the_solver_choices_of_the_cli_are_the_engines():
    # spelled in nmfcore.cli so that --help imports no torch: they must stay the engine's list
    from nmfcore.audio.settings import SOLVER_CHOICES
    from nmfcore.cli import SOLVER_CHOICES as CLI_CHOICES

    assert CLI_CHOICES == SOLVER_CHOICES
