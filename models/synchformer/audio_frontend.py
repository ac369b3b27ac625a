"""av-benchmark's audio front-end for DeSync (spec §5): mono 16 kHz -> 0.64 s windows -> normalised log-mel.

Uses torchaudio's `functional.resample` and `transforms.MelSpectrogram` (the calls the reference makes); torchaudio is
imported lazily so the visual extractor works without it.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 10240  # 0.64 s, matches a 16-frame video window
WINDOW_STRIDE = 5120  # 0.32 s
N_FFT = 1024
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 128
MAX_FRAMES = 66
LOG_EPS = 1e-6
NORM_MEAN = -4.2677393
NORM_STD = 4.5689974


def num_samples(duration_s: float) -> int:
    """L = int(16000 * d)."""
    return int(SAMPLE_RATE * duration_s)


def to_mono_16k(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(N,), (C, N) or (B, C, N) -> (B, N') mono float at 16 kHz (channel mean, then torchaudio default resample)."""
    w = waveform.to(torch.float32)
    if w.ndim == 1:
        w = w[None, None]
    elif w.ndim == 2:
        w = w[None]
    if w.ndim != 3:
        raise ValueError(f"expected waveform (N,), (C, N) or (B, C, N), got {tuple(waveform.shape)}")
    w = w.mean(dim=1)
    if sample_rate != SAMPLE_RATE:
        import torchaudio.functional as AF

        w = AF.resample(w, int(sample_rate), SAMPLE_RATE)
    return w


def audio_windows(wave: torch.Tensor, window: int = WINDOW_SAMPLES, stride: int = WINDOW_STRIDE) -> torch.Tensor:
    """(B, L) -> (B, S, window) with S = (L - window) // stride + 1."""
    if wave.shape[-1] < window:
        raise ValueError(f"need at least {window} samples at 16 kHz, got {wave.shape[-1]}")
    return wave.unfold(-1, window, stride)


@lru_cache(maxsize=4)
def _mel_transform(device: str):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, n_mels=N_MELS
    ).to(device)


def log_mel(windows: torch.Tensor) -> torch.Tensor:
    """(..., 10240) samples -> (..., 1, 128, 66) normalised log-mel, as `extract_afeats` receives it.

    log(mel + 1e-6), time axis padded on the right with 0 (log domain) / cut to 66 frames, then
    (x + 4.2677393) / (2 * 4.5689974).
    """
    lead = windows.shape[:-1]
    flat = windows.reshape(-1, windows.shape[-1]).to(torch.float32)
    mel = torch.log(_mel_transform(str(flat.device))(flat) + LOG_EPS)  # (n, 128, 65)
    frames = mel.shape[-1]
    mel = F.pad(mel, (0, MAX_FRAMES - frames), value=0.0) if frames < MAX_FRAMES else mel[..., :MAX_FRAMES]
    mel = (mel - NORM_MEAN) / (2 * NORM_STD)
    return mel.reshape(*lead, 1, N_MELS, MAX_FRAMES)


def waveform_to_mel_windows(
    waveform: torch.Tensor, sample_rate: int, duration_s: float | None = None
) -> torch.Tensor:
    """Waveform at any rate -> (B, S, 1, 128, 66); truncated to int(16000 * d) samples when a duration is given."""
    wave = to_mono_16k(waveform, sample_rate)
    if duration_s is not None:
        n = num_samples(duration_s)
        if wave.shape[-1] < n:
            raise ValueError(f"audio is shorter than {duration_s} s ({wave.shape[-1]} < {n} samples at 16 kHz)")
        wave = wave[..., :n]
    return log_mel(audio_windows(wave))
