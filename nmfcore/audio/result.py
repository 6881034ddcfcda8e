"""The result of a separation: factors, spectrograms, masks and waveforms (:class:`Separation`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from .spectral import (MaskBank, OverlapAdd, frame_blocks, get_window, stft_frames)
from .settings import SeparationSettings, check_groups

__all__ = ["Separation", "masked_overlap_add"]

Callback = Callable[[int, float], Optional[bool]]


@dataclass(eq=False)
class Separation:
    """The result of :func:`separate`: factors, spectrograms and waveforms.

    Waveforms are CPU float32 tensors; spectrograms and factors numpy arrays.

    Attributes
    ----------
    settings : SeparationSettings
    sr : int
        Sample rate of :attr:`mixture` and every waveform.
    mixture : torch.Tensor [shape=(channels, samples)]
        The input (resampled if ``settings.sr`` asked for it).
    W : numpy.ndarray [shape=(freq, R) or (freq, R, kernel...)]
        Templates (NMF2D: ``(kf, R, kt)`` patches).
    H : numpy.ndarray [shape=(R, frames) or (R, ...)]
        Activations (NMFD: ``(R, frames - T + 1)``; NMF2D:
        ``(R, freq - kf + 1, frames - kt + 1)``).
    spectrogram : numpy.ndarray [shape=(freq, frames)]
        The spectrogram of the mono mix as factorised.
    losses : list of (int, float)
        ``(iteration, loss)`` at every check of the fit.
    n_iter : int
        Iterations run.
    timings : dict of str to float
        Seconds spent in 'resample', 'stft', 'fit', 'masks_istft' and 'total'.
    components : torch.Tensor [shape=(R, channels, samples)]
        One waveform per component; they sum to :attr:`mixture`.
    reconstruction : numpy.ndarray [shape=(freq, frames)]
        The model's spectrogram.
    component_spectrograms : numpy.ndarray [shape=(R, freq, frames)]
        Each component's own model spectrogram.
    """

    settings: SeparationSettings
    sr: int
    mixture: Tensor
    W: np.ndarray
    H: np.ndarray
    spectrogram: np.ndarray
    losses: list
    n_iter: int
    timings: dict
    factors: tuple = field(repr=False, default=None)  # (W, H) tensors in the model's layout, on its device
    _components: Optional[Tensor] = field(repr=False, default=None)
    _cache: dict = field(repr=False, default_factory=dict)

    # ----------------------------------------------------------- structure
    @property
    def rank(self) -> int:
        """Number of components R."""
        return int(self.factors[0].shape[1])

    @property
    def n_channels(self) -> int:
        return int(self.mixture.shape[0])

    @property
    def freqs(self) -> np.ndarray:
        """Centre frequency in Hz of every spectrogram row."""
        return np.fft.rfftfreq(self.settings.n_fft, 1.0 / self.sr)

    @property
    def times(self) -> np.ndarray:
        """Time in seconds of every spectrogram frame (frame centres)."""
        return np.arange(self.spectrogram.shape[1]) * self.settings.hop_length / self.sr

    def __getstate__(self):  # factors move to the CPU when pickled (e.g. by a cache)
        state = dict(self.__dict__)
        state["factors"] = tuple(f.cpu() for f in self.factors)
        state["_cache"] = {}
        return state

    def cached(self, key, compute: Callable[[], object]):
        """``compute()``, computed once per separation and kept under ``key``.

        For values derived from the factors that several functions read (the
        component spectrograms, :func:`~nmfcore.audio.grouping.component_summaries`,
        the pitches); the cache is dropped when the separation is pickled.
        """
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # -------------------------------------------------------- spectrograms
    def _component_tensor(self, r: int) -> Tensor:
        W, H = self.factors
        return self.settings.layout.component(H, W, r)

    def _component_frames(self, r: int, a: int, b: int) -> Tensor:
        """Frames ``a:b`` of component ``r``'s model spectrogram (the masks of :meth:`render`)."""
        W, H = self.factors
        return self.settings.layout.component_frames(H, W, r, a, b)

    def component_spectrogram(self, r: int) -> np.ndarray:
        """Model spectrogram (freq, frames) of component ``r``."""
        check_groups([[r]], self.rank)
        return self._component_tensor(r).cpu().numpy()

    @property
    def component_spectrograms(self) -> np.ndarray:
        return self.cached("component_spectrograms", lambda: np.stack(
            [self._component_tensor(r).cpu().numpy() for r in range(self.rank)]))

    @property
    def reconstruction(self) -> np.ndarray:
        W, H = self.factors
        return self.cached("reconstruction", lambda: self.settings.layout.reconstruct(H, W).cpu().numpy())

    def masks(self) -> np.ndarray:
        """Soft masks (R, freq, frames) of all components; they sum to one in every bin."""
        bank = self._mask_bank()
        return np.stack([bank.mask(r).cpu().numpy() for r in range(self.rank)])

    def _mask_bank(self) -> MaskBank:
        return MaskBank(self._component_tensor, self.rank, self.settings.mask_power)

    # ----------------------------------------------------------- waveforms
    def render(self, groups) -> Tensor:
        """Waveforms (G, channels, samples) of groups of components.

        The mask of a group is the sum of its members' masks, so a group's
        waveform equals the sum of its components' waveforms. The STFT,
        masks and overlap-add run over blocks of frames (as in
        :meth:`render_blocks`), so besides the result only one block is in
        memory.
        """
        groups = check_groups(groups, self.rank)
        ola = self._overlap_add(len(groups), assemble=True)
        for _ in self._render(groups, ola):
            pass
        return ola.assembled()

    def render_blocks(self, groups) -> Iterator[tuple[int, Tensor]]:
        """The waveforms of :meth:`render`, block by block of STFT frames, in order.

        Only one block is in memory at a time, so long recordings can be
        rendered (e.g. written to files) without holding whole waveforms.

        Yields
        ------
        start : int
            The first sample of the chunk.
        chunk : torch.Tensor [shape=(G, channels, samples)]
            The groups' waveforms from ``start`` on, on the CPU (valid until
            the next chunk is made); the chunks follow each other and cover
            the recording.

        Examples
        --------
        >>> from nmfcore.audio import separate
        >>> sr = 8000
        >>> t = torch.arange(sr) / sr
        >>> sep = separate(torch.sin(2 * torch.pi * 440 * t), sr, SeparationSettings(rank=2, n_fft=512,
        ...                hop_length=128), keep_components=False)
        >>> [(start, tuple(chunk.shape)) for start, chunk in sep.render_blocks([[0], [1]])]
        [(0, (2, 1, 8000))]
        """
        groups = check_groups(groups, self.rank)
        for start, chunk in self._render(groups, self._overlap_add(len(groups))):
            yield start, chunk.cpu()

    def _overlap_add(self, n_groups: int, **options) -> OverlapAdd:
        s = self.settings
        win = get_window(s.window, s.n_fft, device=self.factors[0].device)
        return OverlapAdd(self.mixture.shape[1], n_fft=s.n_fft, hop_length=s.hop_length, window=win,
                          shape=(n_groups, self.n_channels), **options)

    def _render(self, groups: list[list[int]], ola: OverlapAdd) -> Iterator[tuple[int, Tensor]]:
        win = ola.window
        s = self.settings
        channels = [self.mixture[c].to(win.device) for c in range(self.n_channels)] \
            if win.device.type != "cpu" else self.mixture

        def channel_frames(a, b):
            for y in channels:
                yield stft_frames(y, a, b, n_fft=s.n_fft, hop_length=s.hop_length, window=win)

        yield from masked_overlap_add(groups, ola, self._component_frames, self.rank, s.mask_power, channel_frames)

    def mixture_samples(self, start: int, stop: int) -> Tensor:
        """Samples ``start:stop`` of :attr:`mixture` (channels, stop - start), e.g. for a residual block."""
        return self.mixture[:, start:stop]

    @property
    def components(self) -> Tensor:
        if self._components is None:
            t = perf_counter()
            self._components = self.render([[r] for r in range(self.rank)])
            self.timings["masks_istft"] = perf_counter() - t
        return self._components

    def component(self, r: int) -> Tensor:
        """Waveform (channels, samples) of component ``r`` alone (without computing the others)."""
        if self._components is not None:
            check_groups([[r]], self.rank)
            return self._components[r]
        return self.render([[r]])[0]

    def sources(self, groups) -> Tensor:
        """Waveforms (S, channels, samples): the sum of the components of each group.

        Examples
        --------
        >>> from nmfcore.audio import separate
        >>> sr = 8000
        >>> t = torch.arange(sr) / sr
        >>> y = (torch.sin(2 * torch.pi * 440 * t) * (t < 0.5) + torch.sin(2 * torch.pi * 1500 * t) * (t >= 0.5))
        >>> sep = separate(y, sr, SeparationSettings(rank=2, n_fft=512, hop_length=128))
        >>> sep.sources([[0], [1]]).shape
        torch.Size([2, 1, 8000])
        >>> bool((sep.sources([[0, 1]])[0] - sep.mixture).abs().max() < 1e-4)
        True
        """
        groups = check_groups(groups, self.rank)
        if self._components is not None:
            return _group_sums(self._components, groups)
        return self.render(groups)

    def source_blocks(self, groups, *, components: bool = False) -> Iterator[tuple[int, Tensor, Optional[Tensor]]]:
        """:meth:`sources` block by block (see :meth:`render_blocks`), optionally with the components.

        Parameters
        ----------
        groups : list of list of int
        components : bool, default False, keyword-only
            Also yield every component's waveform; the sources are then the
            sums of their components' chunks.

        Yields
        ------
        start : int
        sources : torch.Tensor [shape=(S, channels, samples)]
            The chunk of :meth:`sources` from sample ``start`` on.
        components : torch.Tensor [shape=(R, channels, samples)] or None
            The chunk of :attr:`components` (``None`` unless asked for).

        If the components are kept already (``keep_components=True``), one
        chunk holds the whole recording.
        """
        groups = check_groups(groups, self.rank)
        if self._components is not None:
            yield 0, _group_sums(self._components, groups), self._components if components else None
        else:
            yield from rendered_blocks(self.render_blocks, self.rank, groups, components)

    def residual(self, groups) -> Tensor:
        """The mixture minus all grouped sources: the waveform of the components in no group."""
        return self.mixture - self.sources(groups).sum(0)


def masked_overlap_add(groups: list[list[int]], ola: OverlapAdd, component_frames: Callable[[int, int, int], Tensor],
                       rank: int, mask_power: float, channel_frames, *, block: Optional[int] = None
                       ) -> Iterator[tuple[int, Tensor]]:
    """The waveforms of groups of components, block by block of STFT frames: the rendering of a separation.

    For each block of frames ``a:b`` (:func:`~nmfcore.audio.spectral.frame_blocks`
    of ``block`` frames), the soft masks of the groups come from
    ``component_frames(r, a, b)`` (the model spectrogram of component ``r``
    over those frames), every channel's complex STFT frames from
    ``channel_frames(a, b)`` (an iterable, one ``(freq, b - a)`` tensor per
    channel, made lazily so that one is held at a time) are multiplied by
    them and overlap-added by ``ola`` (``shape=(groups, channels)``). Yields
    ``ola.finish_block()``: ``(start, samples)``, the finished samples of the
    groups from ``start`` on.
    """
    if not groups:
        return
    for a, b in frame_blocks(ola.n_frames, block):
        bank = MaskBank(lambda r: component_frames(r, a, b), rank, mask_power)
        out = ola.block(a, b)  # (groups, channels, samples)
        masks = [bank.group_mask(g) for g in groups] if out.shape[1] > 1 else None  # reused by every channel
        for c, X in enumerate(channel_frames(a, b)):
            for g, members in enumerate(groups):
                M = masks[g] if masks is not None else bank.group_mask(members)
                ola.add(out[g, c], X * M)
        del bank, masks, out
        yield ola.finish_block()


def rendered_blocks(render_blocks, rank: int, groups: list[list[int]], components: bool):
    """``(start, sources, components or None)`` chunks from ``render_blocks(groups)``: the components are
    rendered one by one and summed per group only when they are asked for too."""
    if components:
        for start, chunk in render_blocks([[r] for r in range(rank)]):
            yield start, _group_sums(chunk, groups), chunk
    else:
        for start, chunk in render_blocks(groups):
            yield start, chunk, None


def _group_sums(components: Tensor, groups: list[list[int]]) -> Tensor:
    """(G, ...) sums of the components (R, ...) of each group (zeros for an empty group)."""
    if not groups:
        return components[:0]
    return torch.stack([components[g].sum(0) if g else components.new_zeros(components.shape[1:]) for g in groups])
