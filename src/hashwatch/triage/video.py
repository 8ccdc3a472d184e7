"""Video files → PDQ of about one frame per second, plus duration and frame count (PyAV).

A known video is found by its crypto hashes (taken by the caller); a video that *contains* known
material is found by matching each sampled frame's PDQ.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from hashwatch.signals.pdq import pdq_hash_fast

__all__ = ["VideoError", "VideoInfo", "hash_video"]

MAX_SIDE = 512  # frames are scaled so the longer side is at most this (PDQ reduces to 64x64)


class VideoError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class VideoInfo:
    duration: float | None
    frame_count: int
    width: int
    height: int
    format: str
    frames: list[tuple[float, str, int]] = field(default_factory=list)  # (seconds, pdq, quality)
    thumb: np.ndarray | None = None  # pixels of the first sampled frame


def hash_video(src: str | bytes, *, every: float = 1.0, max_samples: int = 7200) -> VideoInfo:
    """Decode a video (a path or its bytes) and PDQ-hash one frame every ``every`` seconds.

    Every frame is decoded (so the frame count is exact) but only sampled frames are converted
    and hashed. Raises :class:`VideoError` ("no_video" for audio-only containers, "truncated"
    for undecodable data).
    """
    import av

    try:
        container = av.open(io.BytesIO(src) if isinstance(src, bytes) else src, mode="r")
    except (av.error.InvalidDataError, av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError("truncated", f"cannot open video: {exc}") from None
    with container:
        if not container.streams.video:
            raise VideoError("no_video", "container holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fmt = container.format.name if container.format else ""
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        info = VideoInfo(duration=None, frame_count=0, width=stream.width or 0,
                         height=stream.height or 0, format=fmt)
        next_t = 0.0
        last_t = 0.0
        try:
            for frame in container.decode(stream):
                n = info.frame_count
                info.frame_count += 1
                t = frame.time if frame.time is not None else (n / rate if rate else float(n))
                last_t = max(last_t, t)
                if t + 1e-6 < next_t or len(info.frames) >= max_samples:
                    continue
                w, h = frame.width, frame.height
                scale = min(1.0, MAX_SIDE / max(w, h, 1))
                pixels = frame.to_ndarray(format="rgb24", width=max(1, round(w * scale)),
                                          height=max(1, round(h * scale)))
                pdq, quality = pdq_hash_fast(pixels, h, w)
                info.frames.append((round(t, 3), pdq, quality))
                if info.thumb is None:
                    info.thumb = pixels
                next_t = (int(t / every) + 1) * every
        except (av.error.InvalidDataError, av.error.FFmpegError) as exc:
            if info.frame_count == 0:
                raise VideoError("truncated", f"video data cannot be decoded: {exc}") from None
            # a cut-off video keeps what was decoded: frames before the damage still match
        if info.frame_count == 0:
            raise VideoError("truncated", "no frame could be decoded")
        if container.duration:
            info.duration = round(container.duration / 1_000_000, 3)
        elif stream.duration and stream.time_base:
            info.duration = round(float(stream.duration * stream.time_base), 3)
        else:
            info.duration = round(last_t + (1 / rate if rate else 0), 3)
        info.width = info.width or stream.codec_context.width
        info.height = info.height or stream.codec_context.height
    return info
