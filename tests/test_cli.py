"""The nmfcore command line: separate, evaluate, info, and one-line errors with exit status 2.

Oracles: the files it writes (sources sum to the input, the JSON summary
matches the run), the exit status, and stderr holding one ``error:`` line
and never a traceback.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from _audio_signals import SR

from nmfcore.audio import load_audio, write_audio
from nmfcore.cli import main, parse_groups

FAST = ["--n-fft", "256", "--hop", "64", "--iter", "30", "-q"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_error_line(code, err, match):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], err
    assert "Traceback" not in err


def test_separate_writes_sources_components_and_summary(tmp_path, mix_file, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["separate", mix_file, "-o", out, "--rank", 4, "--sources", 2, "--components",
                             "--names", "low,high", *FAST], capsys)
    assert code == 0, err
    folder = out / "mix"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["components/component00.wav", "components/component01.wav", "components/component02.wav",
                     "components/component03.wav", "high.wav", "low.wav", "summary.json"]
    mix, _ = load_audio(mix_file)
    low, high = load_audio(folder / "low.wav")[0], load_audio(folder / "high.wav")[0]
    assert float((low + high - mix).abs().max()) < 3 / 2 ** 15  # 16-bit rounding of each stem
    comps = sum(load_audio(folder / f)[0] for f in files if f.startswith("components"))
    assert float((comps - mix).abs().max()) < 5 / 2 ** 15
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settings"]["rank"] == 4 and summary["settings"]["n_fft"] == 256
    assert summary["n_iter"] <= 30 and summary["losses"][0][0] == 0 and summary["sample_rate"] == SR
    assert sorted(r for g in summary["groups"] for r in g) == [0, 1, 2, 3] and summary["grouping"] == "auto"
    assert set(summary["timings_s"]) >= {"load", "stft", "fit", "write", "total"}
    assert sorted(summary["component_order"]) == [0, 1, 2, 3]
    assert sorted(summary["component_order_by_pitch"]) == [0, 1, 2, 3]
    # the pitches of the summary are component_pitches' (NaN written as null), with their note names
    pitches = summary["component_pitches_hz"]
    assert len(pitches) == 4 and all(p is None or 30 <= p <= SR / 2 for p in pitches)
    assert [n == "" for n in summary["component_notes"]] == [p is None for p in pitches]
    assert "mix" in stdout and "2 sources" in stdout


def test_separate_with_explicit_groups_writes_residual(tmp_path, mix_file, capsys):
    out = tmp_path / "out"
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 3, "--groups", "0;1", "--format", "flac",
                        *FAST], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (out / "mix").iterdir())
    assert names == ["residual.flac", "source1.flac", "source2.flac", "summary.json"]
    total = sum(load_audio(out / "mix" / n)[0] for n in names if n.endswith(".flac"))
    assert float((total - load_audio(mix_file)[0]).abs().max()) < 4 / 2 ** 15
    assert json.loads((out / "mix" / "summary.json").read_text())["groups"] == [[0], [1]]


@pytest.mark.parametrize("components", [False, True])
def test_streamed_stems_equal_the_in_memory_separation(tmp_path, mix_file, capsys, monkeypatch, components):
    # the CLI renders and writes block by block; the stems are those of Separation.sources
    import nmfcore.audio.spectral as spectral
    from nmfcore.audio import SeparationSettings, separate

    monkeypatch.setattr(spectral, "BLOCK_FRAMES", 5)
    out = tmp_path / "out"
    flags = ["--components"] if components else []
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, "--groups", "0,2;1", *flags, *FAST], capsys)
    assert code == 0, err
    monkeypatch.setattr(spectral, "BLOCK_FRAMES", 1 << 20)
    y, _ = load_audio(mix_file)
    sep = separate(y, SR, SeparationSettings(rank=4, n_fft=256, hop_length=64, n_iter=30))
    expected = list(sep.sources([[0, 2], [1]])) + [sep.residual([[0, 2], [1]])]
    if components:
        expected += list(sep.components)
    names = ["source1", "source2", "residual"] + [f"components/component{r:02d}" for r in range(4 if components
                                                                                             else 0)]
    for name, wave in zip(names, expected):
        written, _ = load_audio(out / "mix" / f"{name}.wav")
        assert float((written - wave.clamp(-1, 1)).abs().max()) <= 1.01 / 2 ** 15, name  # 16-bit rounding


def test_separate_many_files_and_same_names(tmp_path, mix_file, capsys):
    other = tmp_path / "b"
    other.mkdir()
    second = write_audio(other / "mix.wav", load_audio(mix_file)[0] * 0.5, SR)
    code, _, err = run(["separate", mix_file, second, "-o", tmp_path / "out", "--rank", 2, *FAST], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mix", "mix-2"]


def test_separate_nmfd_with_resampling(tmp_path, mix_file, capsys):
    code, _, err = run(["separate", mix_file, "-o", tmp_path / "o", "--model", "NMFD", "--kernel", 3,
                        "--rank", 2, "--sr", 16000, *FAST], capsys)
    assert code == 0, err
    y, sr = load_audio(tmp_path / "o" / "mix" / "source1.wav")
    assert sr == 16000 and y.shape == (1, 16000)


def test_existing_outputs_are_not_overwritten_without_flag(tmp_path, mix_file, capsys):
    out = tmp_path / "out"
    assert run(["separate", mix_file, "-o", out, "--rank", 2, *FAST], capsys)[0] == 0
    before = (out / "mix" / "source1.wav").read_bytes()
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 2, "--seed", 5, "--init", "random", *FAST],
                       capsys)
    assert code == 2 and "exists already: pass --overwrite" in err and "Traceback" not in err
    assert (out / "mix" / "source1.wav").read_bytes() == before
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 2, "--seed", 5, "--init", "random",
                        "--overwrite", *FAST], capsys)
    assert code == 0, err
    assert (out / "mix" / "source1.wav").read_bytes() != before


def test_output_names_cannot_escape_the_output_folder(tmp_path, mix_file, capsys):
    out = tmp_path / "out"
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 2, "--names", "../../evil,ok", *FAST], capsys)
    assert code == 0, err
    written = {p.resolve() for p in tmp_path.rglob("*.wav")} - {p.resolve() for p in tmp_path.glob("*.wav")}
    assert written and all(p.is_relative_to(out.resolve()) for p in written)
    assert (out / "mix" / "evil.wav").exists()
    weird = write_audio(tmp_path / "..weird name;rm.wav", load_audio(mix_file)[0], SR)
    code, _, err = run(["separate", weird, "-o", out, "--rank", 2, *FAST], capsys)
    assert code == 0, err
    assert (out / "weird name;rm" / "source1.wav").exists()  # only separators and control characters go


@pytest.mark.parametrize("argv,match", [
    (["separate", "{missing}", "-o", "{out}"], "no such file"),
    (["separate", "{mix}", "-o", "{out}", "--rank", "0"], "rank=0"),
    (["separate", "{mix}", "-o", "{out}", "--rank", "x"], "invalid int value: 'x'"),
    (["separate", "{mix}", "-o", "{out}", "--model", "PCA"], "model='PCA'"),
    (["separate", "{mix}", "-o", "{out}", "--continuity", "-1"], "continuity=-1"),
    (["separate", "{mix}", "-o", "{out}", "--model", "NMF2D", "--continuity", "0.1"], "continuity=0.1 needs model"),
    (["separate", "{mix}", "-o", "{out}", "--beta", "nan"], "beta"),
    (["separate", "{mix}", "-o", "{out}", "--hop", "4096"], "hop_length=4096"),
    (["separate", "{mix}", "-o", "{out}", "--kernel", "3x"], "kernel size"),
    (["separate", "{mix}", "-o", "{out}", "--rank", "2", "--sources", "3"], "--sources 3"),
    (["separate", "{mix}", "-o", "{out}", "--rank", "2", "--groups", "0;0"], "more than one group"),
    (["separate", "{mix}", "-o", "{out}", "--rank", "2", "--groups", "0;a"], "not a component index"),
    (["separate", "{mix}", "-o", "{out}", "--rank", "2", "--names", "a,b,c"], "--names"),
    (["separate", "{mix}", "-o", "{out}", "--device", "cuda"], "device='cuda'"),
    (["separate", "{mix}", "-o", "{mix}"], "is not a folder"),
    (["separate", "{mix}", "-o", "{out}", "--max-duration", "0.5"], "more than max_duration"),
    (["separate", "{garbage}", "-o", "{out}"], "cannot read audio"),
    (["separate", "{mix}", "-o", "{out}", "--n-fft", "65536", "--hop", "512"], "shorter than one FFT frame"),
    (["separate", "{mix}"], "required: -o/--output"),
    (["evaluate", "-e", "{missing}", "-r", "{mix}"], "no such file"),
    (["evaluate", "-e", "{out}", "-r", "{mix}"], "no audio files"),
    (["frobnicate"], "invalid choice"),
    ([], "choose a command"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, mix_file, capsys, argv, match):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("CUDA present")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"garbage" * 50)
    (tmp_path / "emptydir").mkdir()
    subs = {"{missing}": str(tmp_path / "missing.wav"), "{out}": str(tmp_path / "emptydir"), "{mix}": str(mix_file),
            "{garbage}": str(garbage)}
    code, _, err = run([subs.get(a, a) for a in argv], capsys)
    assert_one_error_line(code, err, match)


def test_evaluate_prints_table_and_json(tmp_path, mix_file, capsys):
    out = tmp_path / "out"
    assert run(["separate", mix_file, "-o", out, "--rank", 2, "--iter", 100, "--n-fft", 512, "--hop", 128, "-q"],
               capsys)[0] == 0
    refs = [tmp_path / "ref_low.wav", tmp_path / "ref_high.wav"]
    js = tmp_path / "scores.json"
    code, stdout, err = run(["evaluate", "-e", out / "mix", "-r", *refs, "--json", js], capsys)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["reference", "estimate", "SI-SDR"]
    assert lines[1].split()[0] == "ref_low" and lines[-1].split()[0] == "mean"
    scores = json.loads(js.read_text())
    assert scores["names"] == ["ref_low", "ref_high"] and min(scores["si_sdr"]) > 15
    assert sorted(scores["permutation"]) == [0, 1]
    # the JSON is not overwritten without the flag
    code, _, err = run(["evaluate", "-e", out / "mix", "-r", *refs, "--json", js, "--no-bss"], capsys)
    assert_one_error_line(code, err, "exists already")


def test_evaluate_handles_other_rate_and_length(tmp_path, mix_file, capsys):
    y, _ = load_audio(tmp_path / "ref_low.wav")
    est = write_audio(tmp_path / "est.wav", np.interp(np.arange(0, 8000, 0.5), np.arange(8000), y[0].numpy())[None],
                      16000)
    code, stdout, err = run(["evaluate", "-e", est, "-r", tmp_path / "ref_low.wav", "--no-bss"], capsys)
    assert code == 0, err
    assert float(stdout.strip().splitlines()[1].split()[-1]) > 20


def test_info(capsys):
    code, stdout, _ = run(["info"], capsys)
    assert code == 0
    assert "nmfcore" in stdout and "torch" in stdout and "models: NMF" in stdout and "WAV" in stdout


def test_help_and_version_exit_0(capsys):
    assert main(["--version"]) == 0
    assert main(["separate", "--help"]) == 0
    assert "--rank" in capsys.readouterr().out


def test_parse_groups():
    assert parse_groups("0,1;2-4;5") == [[0, 1], [2, 3, 4], [5]]
    assert parse_groups(" 3 ; 4-5 ") == [[3], [4, 5]]


def test_console_entry_point_runs_as_a_process(tmp_path):
    # the real process: exit status and stderr as a user sees them
    proc = subprocess.run([sys.executable, "-m", "nmfcore.cli", "separate", str(tmp_path / "nope.wav"), "-o",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
