"""The development mixtures with stems (``shared/dev-audio``), shared by the benchmarks that need references.

Each mixture is a folder with ``meta.json`` (``{"sources": [names]}``),
``mix.wav`` and one ``<name>.wav`` per source.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmfcore.audio import load_audio  # noqa: E402

# ../shared/dev-audio next to the repository (a worktree one level deeper: ../../shared/dev-audio)
DEFAULT_DATA = next((p / "shared" / "dev-audio" for p in Path(__file__).resolve().parents[1:4]
                     if (p / "shared" / "dev-audio").is_dir()), Path("shared") / "dev-audio")


def load_items(root: Path) -> list[dict]:
    """Every mixture under ``root``: ``{"name", "names", "mix", "sr", "refs"}`` (refs: (S, channels, samples))."""
    items = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and (p / "meta.json").exists()):
        names = json.loads((folder / "meta.json").read_text())["sources"]
        mix, sr = load_audio(folder / "mix.wav")
        refs = torch.stack([load_audio(folder / f"{n}.wav", sr=sr)[0] for n in names])
        # the whole folder name: several items share the part before "__" (guitar_backing, speech_music)
        items.append({"name": folder.name, "names": names, "mix": mix, "sr": sr, "refs": refs})
    if not items:
        raise SystemExit(f"no mixtures with stems (folders with meta.json) in {root}")
    return items
