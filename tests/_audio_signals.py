"""Small synthetic signals for the audio tests (made here, no files, no network)."""

import math

import torch

SR = 8000


def harmonic_tone(f0: float, seconds: float, sr: int = SR, n_harmonics: int = 4) -> torch.Tensor:
    """A tone with ``n_harmonics`` partials of amplitude 1/k (a fixed spectral template)."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    y = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, n_harmonics + 1))
    return y.float()


def gate(n: int, sr: int, on: list[tuple[float, float]]) -> torch.Tensor:
    """A 0/1 envelope that is 1 within each (start, stop) interval in seconds, with 5 ms ramps."""
    env = torch.zeros(n)
    ramp = max(1, int(0.005 * sr))
    for a, b in on:
        i, j = int(a * sr), min(n, int(b * sr))
        env[i:j] = 1.0
        r = min(ramp, (j - i) // 2)
        if r > 0:
            env[i:i + r] = torch.linspace(0, 1, r)
            env[j - r:j] = torch.linspace(1, 0, r)
    return env


def two_sources(sr: int = SR, seconds: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sources with known, distinct templates and partly overlapping activity.

    Returns ``(mixture (1, n), references (2, 1, n))``: a 220 Hz harmonic tone
    and a 1320 Hz harmonic tone (no shared partials below 4 kHz except none),
    switched on and off at different times.
    """
    n = int(seconds * sr)
    low = harmonic_tone(220.0, seconds, sr, 4) * gate(n, sr, [(0.0, 0.9), (1.3, 2.0)]) * 0.5
    high = harmonic_tone(1320.0, seconds, sr, 2) * gate(n, sr, [(0.5, 1.6)]) * 0.4
    refs = torch.stack([low, high])[:, None]
    return refs.sum(0), refs


def clicks(sr: int = SR, seconds: float = 1.0, every: float = 0.25) -> torch.Tensor:
    """Short decaying noise bursts every ``every`` seconds (seeded)."""
    n = int(seconds * sr)
    g = torch.Generator().manual_seed(7)
    y = torch.zeros(n)
    burst = torch.randn(int(0.03 * sr), generator=g) * torch.exp(-torch.arange(int(0.03 * sr)) / (0.005 * sr))
    for start in range(0, n - burst.numel(), int(every * sr)):
        y[start:start + burst.numel()] += burst
    return y
