"""Batch scans beyond one machine: a manifest of files in shards, the same per-file work as
``hashwatch match`` on a local process pool or on Ray, per-shard Parquet outputs, resume."""

import importlib

# loaded on first use: the CLI imports hashwatch.scan.cli for every command, and these
# modules pull in pyarrow, the matcher and the store
_EXPORTS = {
    "Batch": "engines", "LocalEngine": "engines", "RayEngine": "engines",
    "Manifest": "manifest", "ManifestError": "manifest", "build_manifest": "manifest",
    "file_id": "manifest",
    "ScanError": "run", "ScanProgress": "run", "ScanResult": "run", "run_scan": "run",
    "scan_id": "run",
    "ScanConfig": "work", "scan_batch": "work",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
