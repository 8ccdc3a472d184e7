"""Batch scans beyond one machine: a manifest of files in shards, the same per-file work as
``hashwatch match`` on a local process pool or on Ray, per-shard Parquet outputs, resume."""

from .engines import Batch, LocalEngine, RayEngine
from .manifest import Manifest, ManifestError, build_manifest, file_id
from .run import ScanError, ScanProgress, ScanResult, run_scan, scan_id
from .work import ScanConfig, scan_batch

__all__ = ["Batch", "LocalEngine", "Manifest", "ManifestError", "RayEngine", "ScanConfig",
           "ScanError", "ScanProgress", "ScanResult", "build_manifest", "file_id", "run_scan",
           "scan_batch", "scan_id"]
