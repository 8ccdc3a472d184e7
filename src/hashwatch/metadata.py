"""What a file says about where and when it was made: file-system timestamps, EXIF of
pictures (Pillow) and container tags of videos (PyAV).

Everything here is best effort and never fails a file: malformed metadata becomes a warning
(``"metadata: ..."``) beside whatever could be read. Values are kept as the file gives them
(strings stripped of NULs and padding); times are ISO 8601 strings, with a zone only when
the source has one (EXIF times are the camera's wall clock unless an ``OffsetTime*`` tag
says otherwise; file-system and tar times are UTC; zip times are local wall clock unless the
member carries the extended-timestamp field).

Sources: EXIF 2.32 (CIPA DC-008-2019) tag numbers as in ``PIL.ExifTags``; ISO 6709 for the
``location`` tag of MP4/QuickTime; Linux ``statx(2)`` for the birth time; the zip
"extended timestamp" extra field (0x5455) from Info-ZIP's extrafld.txt.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "device_key",
    "device_label",
    "fs_times",
    "image_metadata",
    "iso_utc",
    "video_metadata",
    "zip_extended_mtime",
]

MAX_TEXT = 200  # a tag longer than this is cut (hostile files carry megabytes of "model")


def iso_utc(seconds: float | None) -> str | None:
    """Epoch seconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), None stays None."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


# -- file system ---------------------------------------------------------------------------------
class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32),
                ("reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    # struct statx from <linux/stat.h> (256 bytes); only the head is read. The padding is
    # larger than the kernel's struct so that no kernel version can write past the buffer.
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("mode", ctypes.c_uint16),
                ("spare0", ctypes.c_uint16), ("ino", ctypes.c_uint64), ("size", ctypes.c_uint64),
                ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                ("atime", _StatxTimestamp), ("btime", _StatxTimestamp),
                ("ctime", _StatxTimestamp), ("mtime", _StatxTimestamp),
                ("pad", ctypes.c_uint64 * 64)]


_STATX_BTIME = 0x800
_AT_FDCWD = -100
_statx: Callable[..., int] | None = None
_statx_tried = False


def _birth_time(path: str) -> float | None:
    """Birth (creation) time where the OS and file system record it: ``st_birthtime`` on
    BSD/macOS/Windows, ``statx(2)`` with STATX_BTIME on Linux (ext4, xfs, btrfs, tmpfs...)."""
    global _statx, _statx_tried
    try:
        st = os.stat(path)
    except OSError:
        return None
    bt = getattr(st, "st_birthtime", None)
    if bt is not None:
        return float(bt)
    if not _statx_tried:
        _statx_tried = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.statx
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                           ctypes.POINTER(_Statx)]
            fn.restype = ctypes.c_int
            _statx = fn
        except (OSError, AttributeError):
            _statx = None
    if _statx is None:
        return None
    buf = _Statx()
    if _statx(_AT_FDCWD, os.fsencode(path), 0, _STATX_BTIME, ctypes.byref(buf)) != 0:
        return None
    if not buf.mask & _STATX_BTIME:
        return None  # this file system does not record it
    return buf.btime.tv_sec + buf.btime.tv_nsec / 1e9


def fs_times(path: str, st: os.stat_result | None = None) -> dict[str, str | None]:
    """``modified`` (mtime), ``changed`` (ctime: inode change on Unix), ``accessed`` (atime,
    as found before hashwatch read the file) and ``created`` (birth time, None where the
    file system does not give it), all UTC ISO strings."""
    if st is None:
        try:
            st = os.stat(path)
        except OSError:
            return {}
    return {"modified": iso_utc(st.st_mtime), "changed": iso_utc(st.st_ctime),
            "accessed": iso_utc(st.st_atime), "created": iso_utc(_birth_time(path))}


def zip_extended_mtime(extra: bytes) -> float | None:
    """UTC modification time from a zip member's extended-timestamp extra field (0x5455),
    or None when the member has none (its DOS time is then local wall-clock time)."""
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4:i + 4 + size]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:
            return float(struct.unpack_from("<i", body, 1)[0])
        i += 4 + size
    return None


# -- pictures ------------------------------------------------------------------------------------
def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    s = str(v).replace("\x00", "").strip()
    return s[:MAX_TEXT] or None


_EXIF_TIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


def _exif_time(value: Any, offset: Any = None) -> str | None:
    """``2021:05:06 07:08:09`` (+ ``+02:00``) -> ``2021-05-06T07:08:09+02:00``; None when
    blank or malformed (``0000:00:00 00:00:00`` is how cameras say "unknown")."""
    s = _text(value)
    if not s:
        return None
    m = _EXIF_TIME.match(s)
    if not m:
        raise ValueError(f"date {s[:40]!r} is not EXIF 'YYYY:MM:DD HH:MM:SS'")
    y, mo, d, h, mi, se = (int(x) for x in m.groups())
    if y == 0:
        return None
    datetime(y, mo, d, h, mi, se)  # raises ValueError on an impossible date
    out = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{se:02d}"
    off = _text(offset)
    if off and _OFFSET.match(off):
        out += off
    return out


def _rational(v: Any) -> float:
    if isinstance(v, tuple) and len(v) == 2:  # (num, den) from some writers
        return float(v[0]) / float(v[1])
    return float(v)


def _gps_coord(dms: Any, ref: Any, positive: str, negative: str) -> float | None:
    if dms is None:
        return None
    parts = [_rational(x) for x in (dms if isinstance(dms, (tuple, list)) else [dms])]
    if not parts or any(p != p for p in parts):  # NaN from a 0/0 rational
        raise ValueError("GPS coordinate with an empty rational")
    deg = parts[0] + (parts[1] / 60 if len(parts) > 1 else 0) + \
        (parts[2] / 3600 if len(parts) > 2 else 0)
    r = (_text(ref) or positive).upper()[:1]
    if r not in (positive, negative):
        raise ValueError(f"GPS reference {r!r} is not {positive} or {negative}")
    return round(-deg if r == negative else deg, 7)


def image_metadata(data: bytes) -> tuple[dict[str, Any], list[str]]:
    """EXIF of a picture (JPEG, TIFF, PNG eXIf, WebP, HEIF...): ``(fields, warnings)``.

    Fields (each present only when the file has it): ``make``, ``model``, ``serial`` (body
    serial number, or the DNG camera serial), ``software``, ``lens``, ``taken``
    (DateTimeOriginal, ISO; zone only from OffsetTimeOriginal), ``digitized``,
    ``exif_modified`` (IFD0 DateTime), ``gps_lat`` / ``gps_lon`` (signed degrees, WGS 84 as
    written) and ``gps_alt`` (metres). Never raises: a malformed tag or block is a warning.
    """
    from PIL import ExifTags, Image

    out: dict[str, Any] = {}
    warnings: list[str] = []
    try:
        from hashwatch.decode import _ensure_heif

        if data[4:8] == b"ftyp":
            _ensure_heif()
        with Image.open(io.BytesIO(data)) as im:
            exif = im.getexif()
            if not exif:
                return out, warnings
            B = ExifTags.Base
            sub = _ifd(exif, ExifTags.IFD.Exif, warnings)
            gps = _ifd(exif, ExifTags.IFD.GPSInfo, warnings)
    except Exception as exc:  # noqa: BLE001 - hostile metadata reaches odd corners of Pillow
        warnings.append(f"metadata: EXIF could not be read ({type(exc).__name__}: {exc})")
        return out, warnings

    def put(key: str, fn: Callable[[], Any]) -> None:
        try:
            v = fn()
        except Exception as exc:  # noqa: BLE001
            warnings.append(f"metadata: {key}: {exc}")
            return
        if v is not None and v != "":
            out[key] = v

    put("make", lambda: _text(exif.get(B.Make)))
    put("model", lambda: _text(exif.get(B.Model)))
    put("serial", lambda: _text(sub.get(B.BodySerialNumber)) or _text(exif.get(0xC62F)))
    put("software", lambda: _text(exif.get(B.Software)))
    put("lens", lambda: _text(sub.get(B.LensModel)))
    put("taken", lambda: _exif_time(sub.get(B.DateTimeOriginal), sub.get(B.OffsetTimeOriginal)))
    put("digitized", lambda: _exif_time(sub.get(B.DateTimeDigitized),
                                        sub.get(B.OffsetTimeDigitized)))
    put("exif_modified", lambda: _exif_time(exif.get(B.DateTime), sub.get(B.OffsetTime)))
    if gps:
        G = ExifTags.GPS
        put("gps_lat", lambda: _gps_coord(gps.get(G.GPSLatitude), gps.get(G.GPSLatitudeRef),
                                          "N", "S"))
        put("gps_lon", lambda: _gps_coord(gps.get(G.GPSLongitude), gps.get(G.GPSLongitudeRef),
                                          "E", "W"))
        if ("gps_lat" in out) != ("gps_lon" in out):
            out.pop("gps_lat", None)
            out.pop("gps_lon", None)
            warnings.append("metadata: GPS position has only one of latitude and longitude")
        put("gps_alt", lambda: None if gps.get(G.GPSAltitude) is None else round(
            _rational(gps[G.GPSAltitude]) * (-1 if gps.get(G.GPSAltitudeRef) in (1, b"\x01")
                                             else 1), 2))
    return out, warnings


def _ifd(exif: Any, tag: int, warnings: list[str]) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"metadata: EXIF sub-IFD {tag:#x} unreadable ({type(exc).__name__})")
        return {}


# -- videos --------------------------------------------------------------------------------------
_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?/?$")
# container tag names that carry the recording device (QuickTime/Apple, Android, generic)
_VIDEO_TAGS = {
    "make": ("com.apple.quicktime.make", "com.android.manufacturer", "make"),
    "model": ("com.apple.quicktime.model", "com.android.model", "model"),
    "software": ("com.apple.quicktime.software", "com.android.version", "software"),
    "taken": ("com.apple.quicktime.creationdate", "creation_time", "date"),
    "location": ("com.apple.quicktime.location.iso6709", "location"),
}


def _video_time(value: str) -> str:
    """Container times (``2022-03-04T05:06:07.000000Z``, ``2022-03-04T05:06:07+0200``) ->
    ISO without fractions, zone kept."""
    s = value.strip()
    m = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?$",
                 s)
    if not m:
        raise ValueError(f"creation time {s[:40]!r} is not ISO 8601")
    zone = m.group(3) or ""
    if zone and zone != "Z" and ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
    return f"{m.group(1)}T{m.group(2)}{zone}"


def video_metadata(src: str | bytes) -> tuple[dict[str, Any], list[str]]:
    """Container tags of a video (a path or its bytes), read without decoding a frame:
    ``make``, ``model``, ``software``, ``taken`` (creation time), ``gps_lat`` / ``gps_lon``
    (ISO 6709 ``location``), ``encoder``. ``(fields, warnings)``; never raises."""
    import av

    out: dict[str, Any] = {}
    warnings: list[str] = []
    try:
        with av.open(io.BytesIO(src) if isinstance(src, bytes) else src, mode="r") as c:
            tags = {str(k).lower(): str(v) for k, v in (c.metadata or {}).items()}
            for s in c.streams.video[:1]:
                for k, v in (s.metadata or {}).items():
                    tags.setdefault(str(k).lower(), str(v))
    except Exception as exc:  # noqa: BLE001 - the decoder reports the broken file itself
        warnings.append(f"metadata: container tags unreadable ({type(exc).__name__})")
        return out, warnings
    for key, names in _VIDEO_TAGS.items():
        raw = next((tags[n] for n in names if _text(tags.get(n))), None)
        if raw is None:
            continue
        try:
            if key == "taken":
                out["taken"] = _video_time(raw)
            elif key == "location":
                m = _ISO6709.match(raw.strip())
                if not m:
                    raise ValueError(f"location {raw[:40]!r} is not ISO 6709")
                lat, lon = float(m.group(1)), float(m.group(2))
                if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                    raise ValueError(f"location {raw[:40]!r} is out of range")
                out["gps_lat"], out["gps_lon"] = round(lat, 7), round(lon, 7)
            else:
                out[key] = _text(raw)
        except ValueError as exc:
            warnings.append(f"metadata: {exc}")
    enc = _text(tags.get("encoder"))
    if enc:
        out["encoder"] = enc
    return out, warnings


# -- devices -------------------------------------------------------------------------------------
def device_key(meta: dict[str, Any]) -> str | None:
    """A stable identity of the recording device: make + model + serial, or make + model +
    software when the file has no serial; None without a make or a model."""
    make, model = _text(meta.get("make")), _text(meta.get("model"))
    if not make and not model:
        return None
    parts = [make or "", model or ""]
    if meta.get("serial"):
        parts.append("serial=" + str(meta["serial"]))
    elif meta.get("software"):
        parts.append("software=" + str(meta["software"]))
    return " | ".join(parts)


def device_label(key: str | None) -> str:
    """``Canon | EOS 5D | serial=123`` -> ``Canon EOS 5D, serial 123`` (for people)."""
    if not key:
        return "no device recorded"
    parts = key.split(" | ")
    name = " ".join(p for p in parts[:2] if p)
    extra = [p.replace("=", " ", 1) for p in parts[2:]]
    return ", ".join([name] + extra)
