"""Audio source separation with nmfcore models, in torch from STFT to ISTFT.

A recording goes in, one waveform per component and per source comes out,
and they sum back to the recording::

    from nmfcore.audio import load_audio, separate, SeparationSettings, auto_group
    y, sr = load_audio("song.wav", sr=22050)
    sep = separate(y, sr, SeparationSettings(model="NMFD", rank=12, kernel_size=6))
    stems = sep.sources(auto_group(sep, 3))          # (3, channels, samples)

Modules
-------
io          load_audio, write_audio (AudioWriter), audio_bytes, resample, safe output paths
spectral    stft, istft, spectrogram, alpha-Wiener soft masks
models      MODELS registry (NMF, NMFD, NMF2D, PLCA, SIPLCA; more through register_model)
separation  SeparationSettings, separate, Separation; supervised separation
longfile    separate_file: a long file read, fitted (mini-batch) and rendered block by block
guided      separate_guided, refine: marks of where each source sounds (Mark, mark_weights)
grouping    component_order (by centroid or pitch), component_pitches, auto_group (clustering)
evaluation  si_sdr, bss_eval, evaluate, oracle masks, best (oracle) grouping
"""

from .evaluation import (best_grouping, bss_eval, bss_eval_backend, evaluate, match_sources, oracle_sources,
                         si_sdr, si_sdr_matrix)
from .guided import (GuidedSeparation, Mark, check_marks, mark_weights, parse_marks, refine, separate_guided,
                     source_blocks)
from .grouping import (auto_group, component_centroids, component_features, component_order, component_pitches,
                       harmonic_salience, kmeans, note_names, spectral_clustering)
from .io import (AudioError, AudioWriter, OutputExistsError, audio_bytes, load_audio, output_path, resample,
                 safe_filename, write_audio)
from .models import MODELS, ModelSpec, fit_solver, register_model
from .separation import (Separation, SeparationSettings, check_groups, learn_dictionary, separate,
                         separate_supervised)
from .settings import SOLVER_CHOICES
from .longfile import LongSeparation, SpectrogramBlocks, separate_file
from .spectral import istft, soft_masks, spectrogram, stft

__all__ = [
    # contract (notes/audio_api.md)
    "AudioError", "load_audio", "write_audio", "audio_bytes", "MODELS", "ModelSpec", "SeparationSettings",
    "separate", "Separation", "auto_group", "component_order", "si_sdr", "evaluate",
    # more
    "OutputExistsError", "AudioWriter", "fit_solver", "resample", "safe_filename", "output_path", "register_model", "check_groups",
    "learn_dictionary", "separate_supervised", "component_centroids", "component_features", "kmeans",
    "spectral_clustering", "component_pitches", "harmonic_salience", "note_names",
    "stft", "istft", "spectrogram", "soft_masks",
    "si_sdr_matrix", "match_sources", "bss_eval", "bss_eval_backend", "oracle_sources", "best_grouping",
    "separate_guided", "refine", "GuidedSeparation", "Mark", "parse_marks", "check_marks", "mark_weights",
    "source_blocks", "SOLVER_CHOICES", "separate_file", "SpectrogramBlocks", "LongSeparation",
]
