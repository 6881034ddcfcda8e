"""The command line under bad and extreme input (issue 14, sections 1 and 3).

Oracles: the exit status and one ``error:`` line naming what is wrong (never
a traceback, never a long computation first); the files on disk (a run
folder is complete or absent, never partial; stems sum to the input); the
JSON summary; ``sys.modules`` of a fresh interpreter for the lazy imports.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from _audio_signals import SR, two_sources

import nmfcore.audio
from nmfcore.audio import load_audio, write_audio
from nmfcore.cli import main

FAST = ["--n-fft", "256", "--hop", "64", "--iter", "30", "-q"]
ROOT = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_error_line(code, err, match, status=2):
    assert code == status, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], err
    assert "Traceback" not in err


def leftovers(out: Path):
    """Hidden partial or old run folders left in the output folder."""
    return [p.name for p in out.iterdir() if p.name.startswith(".")] if out.exists() else []


# ------------------------------------------------------------------ section 1: memory
def test_huge_group_range_is_refused_before_expanding(tmp_path, mix_file, capsys):
    """Oracle: '--groups 0-1000000000' grew to 21.9 GB; now one error line naming the range and the
    rank, within a second (the range is checked before it is expanded)."""
    t = time.perf_counter()
    code, _, err = run(["separate", mix_file, "-o", tmp_path / "out", "--rank", 4,
                        "--groups", "0-1000000000", *FAST], capsys)
    assert time.perf_counter() - t < 5
    assert_one_error_line(code, err, "'0-1000000000' is beyond the last component 3 (--rank 4)")


def test_rank_above_the_frequency_bins_is_refused(tmp_path, mix_file, capsys):
    """Oracle: --rank 30000 needed a 7.2 GB allocation; it is refused with the limit (bins of n_fft)."""
    code, _, err = run(["separate", mix_file, "-o", tmp_path / "out", "--rank", 30000, *FAST], capsys)
    assert_one_error_line(code, err, "at most 129 (the frequency bins of --n-fft 256)")
    assert not (tmp_path / "out" / "mix").exists()


def test_rank_above_the_frames_of_a_short_input_is_refused(tmp_path, capsys):
    """Oracle: a rank above the number of frames of a short input is refused with that limit."""
    y = torch.randn(1, 600, generator=torch.Generator().manual_seed(0)) * 0.1
    path = write_audio(tmp_path / "short.wav", y, SR)  # 600 samples, hop 64: 10 frames
    code, _, err = run(["separate", path, "-o", tmp_path / "out", "--rank", 20, *FAST], capsys)
    assert_one_error_line(code, err, "--rank 20 is more than the spectrogram supports: at most 10")


# ------------------------------------------------------------------ section 1: evaluate
def _refs(tmp_path, names=("low", "high")):
    mix, refs = two_sources(seconds=1.0)
    folder = tmp_path / "refs"
    folder.mkdir()
    for name, ref in zip(names, refs):
        write_audio(folder / f"{name}.wav", ref, SR)
    return folder, mix, refs


def test_evaluate_reports_infinite_scores_and_their_mean(tmp_path, capsys):
    """Oracle: one perfect and one silent estimate: SI-SDR +inf and -inf in the table, a mean of nan
    (both infinities; before: 19.45 dB from the finite one alone), a note for each, and the JSON keeps
    them as strings."""
    folder, mix, refs = _refs(tmp_path)
    est = tmp_path / "est"
    est.mkdir()
    write_audio(est / "a.wav", refs[0], SR)
    write_audio(est / "b.wav", torch.zeros_like(refs[1]), SR)
    js = tmp_path / "s.json"
    code, out, err = run(["evaluate", "-e", est, "-r", folder, "--no-bss", "--json", js], capsys)
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.strip().splitlines()[1:]}
    assert rows["low"][-1] == "+inf" and rows["high"][-1] == "-inf"
    assert rows["mean"][-1] == "nan"
    assert "high: SI-SDR is -inf (the estimate is silent)" in err
    assert "low: SI-SDR is +inf (a perfect estimate)" in err
    data = json.loads(js.read_text())
    assert dict(zip(data["names"], data["si_sdr"])) == {"low": "inf", "high": "-inf"}
    assert data["mean"]["si_sdr"] == "nan"


def test_evaluate_mean_of_perfect_estimates_is_inf(tmp_path, capsys):
    """Oracle: perfect estimates score +inf each, so the mean is +inf (before: nan)."""
    folder, mix, refs = _refs(tmp_path)
    code, out, err = run(["evaluate", "-e", *sorted(folder.iterdir()), "-r", folder, "--no-bss"], capsys)
    assert code == 0, err
    assert out.strip().splitlines()[-1].split()[-1] == "+inf"


def test_evaluate_lists_unmatched_references(tmp_path, capsys):
    """Oracle: two references and one estimate: the other reference is listed as unmatched (before: it
    dropped out of the mean without a word)."""
    folder, mix, refs = _refs(tmp_path)
    est = write_audio(tmp_path / "only.wav", refs[0] + 0.01 * refs[1], SR)
    code, out, err = run(["evaluate", "-e", est, "-r", folder, "--no-bss"], capsys)
    assert code == 0, err
    assert "unmatched" in out and "1 of 2" in out
    assert "1 reference(s) without an estimate, not in the mean: high" in err


@pytest.mark.parametrize("meta", [False, True])
def test_evaluate_never_scores_the_mixture_as_a_reference(tmp_path, capsys, meta):
    """Oracle: a mix.wav in the reference folder (the README's folder form, shared/dev-audio) was scored
    as a reference; now only the stems are (meta.json's sources where present)."""
    folder, mix, refs = _refs(tmp_path)
    write_audio(folder / "mix.wav", mix, SR)
    if meta:
        (folder / "meta.json").write_text(json.dumps({"sources": ["low", "high"]}))
    est = tmp_path / "est"
    est.mkdir()
    write_audio(est / "e1.wav", refs[0] + 0.05 * refs[1], SR)
    write_audio(est / "e2.wav", refs[1] + 0.05 * refs[0], SR)
    js = tmp_path / "s.json"
    code, out, err = run(["evaluate", "-e", est, "-r", folder, "--no-bss", "--json", js], capsys)
    assert code == 0, err
    assert sorted(json.loads(js.read_text())["names"]) == ["high", "low"]
    assert "mix" not in [line.split()[0] for line in out.strip().splitlines()]


# ------------------------------------------------------------------ section 1: above full scale
def _loud_file(tmp_path):
    mix, _ = two_sources(seconds=1.0)
    loud = mix / mix.abs().max() * 1.8
    path = tmp_path / "loud.wav"
    sf.write(path, loud.numpy().T, SR, subtype="FLOAT")
    return path, loud


def test_input_above_full_scale_is_written_as_float_and_sums_to_the_input(tmp_path, capsys):
    """Oracle: peak 1.8 was clipped (61% of a stem at full scale, stems no longer summing to the input);
    now float WAVs that sum to the input, a warning, and the subtype in summary.json."""
    path, loud = _loud_file(tmp_path)
    out = tmp_path / "out"
    code, _, err = run(["separate", path, "-o", out, "--rank", 4, "--groups", "0,1;2", *FAST], capsys)
    assert code == 0, err
    assert "warning:" in err and "above full scale" in err
    summary = json.loads((out / "loud" / "summary.json").read_text())
    assert summary["output_subtype"] == "FLOAT" and summary["input_peak"] == pytest.approx(1.8, rel=1e-5)
    parts = [load_audio(out / "loud" / f"{n}.wav")[0] for n in ("source1", "source2", "residual")]
    assert max(float(p.abs().max()) for p in parts) > 1.0
    torch.testing.assert_close(sum(parts), loud, atol=1e-4, rtol=0)


def test_input_above_full_scale_to_flac_takes_one_gain(tmp_path, capsys):
    """Oracle: FLAC is integer only: every stem is scaled by one gain (recorded), so the stems divided by it
    sum to the input (16-bit steps), and nothing clips."""
    path, loud = _loud_file(tmp_path)
    out = tmp_path / "out"
    code, _, err = run(["separate", path, "-o", out, "--rank", 4, "--sources", 2, "--format", "flac", *FAST],
                       capsys)
    assert code == 0, err
    assert "one gain" in err
    summary = json.loads((out / "loud" / "summary.json").read_text())
    gain = summary["output_gain"]
    assert 0 < gain < 1
    parts = [load_audio(out / "loud" / f"source{j}.flac")[0] for j in (1, 2)]
    assert max(float(p.abs().max()) for p in parts) <= 1.0
    torch.testing.assert_close(sum(parts) / gain, loud, atol=4 / 2 ** 15 / gain, rtol=0)


# ------------------------------------------------------------------ section 3: files
def test_full_disk_is_one_error_line_and_leaves_no_partial_run(tmp_path, mix_file, capsys, monkeypatch):
    """Oracle: a writer failing with ENOSPC gave a raw traceback and left half-written files; now one
    'error:' line and neither the run folder nor a hidden partial one."""
    calls = {"n": 0}
    original = nmfcore.audio.AudioWriter.write

    def full(self, y):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return original(self, y)

    monkeypatch.setattr(nmfcore.audio.AudioWriter, "write", full)
    out = tmp_path / "out"
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, *FAST], capsys)
    assert_one_error_line(code, err, "No space left on device")
    assert not (out / "mix").exists() and leftovers(out) == []


def test_short_write_of_soundfile_is_one_error_line(tmp_path, mix_file, capsys, monkeypatch):
    """Oracle: soundfile asserts that every frame was written (a full disk): that AssertionError is now
    one error line ('disk full?') and no partial run."""
    def short(self, data):
        raise AssertionError

    monkeypatch.setattr(sf.SoundFile, "write", short)
    out = tmp_path / "out"
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, *FAST], capsys)
    assert_one_error_line(code, err, "disk full?")
    assert not (out / "mix").exists() and leftovers(out) == []


def test_sigterm_while_writing_is_handled_like_ctrl_c(tmp_path, mix_file, capsys, monkeypatch):
    """Oracle: SIGTERM while writing left half-written WAVs and no summary.json, and the next run refused
    to replace them; now 'terminated', exit 143, no run folder, and the next run succeeds."""
    calls = {"n": 0}
    original = nmfcore.audio.AudioWriter.write

    def interrupted(self, y):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, y)

    monkeypatch.setattr(nmfcore.audio.AudioWriter, "write", interrupted)
    out = tmp_path / "out"
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, *FAST], capsys)
    assert code == 143 and "terminated" in err and "Traceback" not in err
    assert not (out / "mix").exists() and leftovers(out) == []
    monkeypatch.setattr(nmfcore.audio.AudioWriter, "write", original)
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, *FAST], capsys)
    assert code == 0, err


def test_sigterm_to_a_running_process_leaves_nothing(tmp_path, mix_file):
    """Oracle: a real SIGTERM to the command line process during the fit: exit 143, no run folder."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "nmfcore.cli", "separate", str(mix_file), "-o", str(out),
                             "--rank", "4", "--n-fft", "256", "--hop", "64", "--iter", "100000", "--tol", "0",
                             "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while not out.exists() and time.time() < deadline:  # the output folder is made before the fit
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert not (out / "mix").exists() and leftovers(out) == []


def test_overwrite_replaces_the_whole_run_folder(tmp_path, mix_file, capsys):
    """Oracle: --overwrite after a run with more sources left its source3.wav beside the new files; the
    run folder is now replaced as a whole."""
    out = tmp_path / "out"
    assert run(["separate", mix_file, "-o", out, "--rank", 4, "--sources", 3, *FAST], capsys)[0] == 0
    assert (out / "mix" / "source3.wav").exists()
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, "--sources", 2, "--overwrite", *FAST],
                       capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "mix").iterdir()) == ["source1.wav", "source2.wav", "summary.json"]
    assert leftovers(out) == []


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path, mix_file, capsys):
    """Oracle: a folder of the input's name without summary.json (not ours) is never replaced."""
    out = tmp_path / "out"
    (out / "mix").mkdir(parents=True)
    (out / "mix" / "precious.txt").write_text("keep")
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, "--overwrite", *FAST], capsys)
    assert code == 2 and "not the folder of an earlier nmfcore run" in err
    assert (out / "mix" / "precious.txt").read_text() == "keep"


def test_unwritable_output_folder_is_refused_before_the_fit(tmp_path, mix_file, capsys, monkeypatch):
    """Oracle: an output folder that cannot be written failed only after the fit; now before it (the
    fit is never called). Simulated, since these tests may run as root."""
    import tempfile

    import nmfcore.audio.separation

    fits = []
    monkeypatch.setattr(nmfcore.audio, "separate", lambda *a, **k: fits.append(1) or (_ for _ in ()).throw(
        AssertionError("the fit ran")))

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(kwargs.get("dir", args and args[0])))

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    monkeypatch.setattr(nmfcore.audio.AudioWriter, "__init__", denied)
    out = tmp_path / "out"
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, *FAST], capsys)
    assert code == 2 and "cannot be created or written" in err, err
    assert fits == []


def test_output_folder_under_a_file_is_refused_before_the_fit(tmp_path, mix_file, capsys):
    """Oracle: an output folder that cannot be created is one error line naming --output."""
    (tmp_path / "file").write_text("x")
    code, _, err = run(["separate", mix_file, "-o", tmp_path / "file" / "out", "--rank", 4, *FAST], capsys)
    assert_one_error_line(code, err, "--output")


@pytest.mark.parametrize("spec,match", [("0,,1", "empty item between commas"), (";", "group 1 of 2 ('') is empty"),
                                        ("0;;1", "group 2 of 3"), ("0-x", "'0-x' is not a component index"),
                                        ("-1", "'-1' is not a component index")])
def test_malformed_groups_are_errors_naming_the_part(tmp_path, mix_file, capsys, spec, match):
    """Oracle: '0,,1' ran and ';' made two silent sources; now one error line naming the bad part."""
    code, _, err = run(["separate", mix_file, "-o", tmp_path / "out", "--rank", 4, "--groups", spec, *FAST],
                       capsys)
    assert_one_error_line(code, err, match)


def test_kernel_with_plain_nmf_is_an_error(tmp_path, mix_file, capsys):
    """Oracle: --kernel 6 with --model NMF was silently ignored; now an error naming both."""
    code, _, err = run(["separate", mix_file, "-o", tmp_path / "out", "--kernel", 6, *FAST], capsys)
    assert_one_error_line(code, err, "--kernel 6 has no effect with --model NMF")


def test_names_in_other_scripts_are_kept(tmp_path, mix_file, capsys):
    """Oracle: '日本語' and '中文' both became 'audio', so the second run was refused as an overwrite;
    both now keep their names."""
    y, _ = load_audio(mix_file)
    out = tmp_path / "out"
    for name in ("日本語", "中文"):
        path = write_audio(tmp_path / f"{name}.wav", y, SR)
        code, _, err = run(["separate", path, "-o", out, "--rank", 4, *FAST], capsys)
        assert code == 0, err
        assert (out / name / "source1.wav").exists()


def test_undecodable_file_is_one_line_without_decoder_noise(tmp_path):
    """Oracle: a text file renamed .mp3 printed six lines of decoder notes and then 'File does not
    exist'; now exactly one stderr line, 'not a decodable audio file' (checked in a subprocess, since
    the decoder writes to file descriptor 2)."""
    bad = tmp_path / "notes.mp3"
    bad.write_text("hello, this is not audio\n" * 80)
    proc = subprocess.run([sys.executable, "-m", "nmfcore.cli", "separate", str(bad), "-o", str(tmp_path / "out"),
                           "-q"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "not a decodable audio file" in lines[0]
    assert "does not exist" not in lines[0]


def test_sources_are_described_in_the_summary_and_the_report(tmp_path, mix_file, capsys):
    """Oracle: with --sources N the summary said only source1..N; now each source lists its components
    and its kind of sound (centroid, pitch), also in the one-line report, and --features is recorded.
    The low source (a 220 Hz tone) has the lower centroid."""
    out = tmp_path / "out"
    code, stdout, err = run(["separate", mix_file, "-o", out, "--rank", 4, "--sources", 2,
                             "--features", "descriptors", *FAST], capsys)
    assert code == 0, err
    summary = json.loads((out / "mix" / "summary.json").read_text())
    srcs = summary["sources"]
    assert [s["name"] for s in srcs] == ["source1", "source2"]
    assert sorted(r for s in srcs for r in s["components"]) == [0, 1, 2, 3]
    assert all("centroid" in s["sound"] and s["centroid_hz"] > 0 for s in srcs)
    assert summary["grouping_features"] == "descriptors"
    line = stdout.strip().splitlines()[-1]
    assert "source1: components" in line and "source2: components" in line and "centroid" in line


def test_bad_features_are_an_error(tmp_path, mix_file, capsys):
    """Oracle: --features takes only the blocks of auto_group."""
    code, _, err = run(["separate", mix_file, "-o", tmp_path / "out", "--features", "mfcc+chroma", *FAST],
                       capsys)
    assert_one_error_line(code, err, "--features 'mfcc+chroma'")


def test_help_and_version_do_not_import_torch():
    """Oracle: sys.modules of a fresh interpreter: importing nmfcore.cli and running --help and --version
    loads neither torch nor librosa (they took seconds)."""
    code = ("import sys, contextlib, io\nimport nmfcore.cli as c\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert c.main(['--help']) == 0 and c.main(['--version']) == 0\n"
            "    assert c.main(['separate', '--help']) == 0\n"
            "print(sorted(m for m in ('torch', 'librosa', 'numpy', 'soundfile') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_lazy_package_still_exposes_its_names():
    """Oracle: the names of nmfcore's __all__ resolve after the lazy import."""
    import nmfcore

    for name in nmfcore.__all__:
        assert getattr(nmfcore, name) is not None
    assert nmfcore.NMF is nmfcore.nmf.NMF


@pytest.mark.parametrize("beta", ["20", "-30", "1e6"])
def test_extreme_beta_from_the_command_line_runs(tmp_path, mix_file, capsys, beta):
    """Oracle: --beta 20 ended in an IndexError traceback (the over-relaxation table lookup of a NaN
    ratio); it now separates (exit 0, finite stems that sum to the input)."""
    out = tmp_path / "out"
    code, _, err = run(["separate", mix_file, "-o", out, "--rank", 4, "--beta", beta, "--groups", "0,1;2", *FAST],
                       capsys)
    assert code == 0, err
    parts = [load_audio(out / "mix" / f"{n}.wav")[0] for n in ("source1", "source2", "residual")]
    torch.testing.assert_close(sum(parts), load_audio(mix_file)[0], atol=3 / 2 ** 15, rtol=0)
