"""Moving pictures: videos and animated images (GIF, WebP, APNG).

* :mod:`hashwatch.media.frames`: bounded decoding into upright, sampled frames.
* :mod:`hashwatch.media.hashing`: frames → PDQ per frame (+ robust views) and vPDQ.
* :mod:`hashwatch.media.matching`: a file's frames and vPDQ → matches that say which frame.
"""

from hashwatch.media.frames import (
    ANIMATION_LIMITS,
    VIDEO_LIMITS,
    FrameLimits,
    MediaError,
    MediaInfo,
    decode_frames,
    is_animated_image,
)
from hashwatch.media.hashing import FrameHash, MediaHashes, hash_media

__all__ = [
    "ANIMATION_LIMITS",
    "VIDEO_LIMITS",
    "FrameHash",
    "FrameLimits",
    "MediaError",
    "MediaHashes",
    "MediaInfo",
    "decode_frames",
    "hash_media",
    "is_animated_image",
]
