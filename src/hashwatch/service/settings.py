"""Service settings: one dataclass, filled from arguments or ``HASHWATCH_*`` variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashwatch.service.destinations import DestinationPolicy


def _env_bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    """Every field can be set as ``HASHWATCH_<FIELD>``. ``repr`` never shows a database
    password."""

    # database: a path (SQLite) or an SQLAlchemy URL (postgresql+psycopg://...)
    db: str = ""
    # where the PDQ index is persisted (SQLite default: beside the database file)
    index_path: str | None = None
    # map the saved index rather than read it: workers share one copy in the page cache
    index_mmap: bool = True
    # the known images' views the PDQ index holds (empty: every view), e.g.
    # "full,trim,crop60,crop50": less memory at 2*10^7 known images (BENCHMARKS.md, "Which
    # views the hash tier holds"); changing it rebuilds the saved index once
    hash_views: list[str] = field(default_factory=list)
    # seconds between change-feed polls: the fallback bound on how stale a worker can be
    # (PostgreSQL pushes each commit at once with LISTEN/NOTIFY; SQLite relies on the poll)
    refresh_interval: float = 1.0
    # PostgreSQL: LISTEN for change notifications (off = poll only)
    feed_listen: bool = True
    # seconds a thread may hold the GIL before another waiting one gets it (Python's
    # sys.setswitchinterval; 0 = Python's default, 5 ms): the feed refresh makes several
    # database round trips and waits up to this long after each while request threads compute
    gil_switch_interval: float = 0.0
    # bytes: malloc blocks this big or bigger are mapped on their own and unmapped when freed
    # (glibc's mmap threshold, fixed at worker start-up; 0 = glibc's dynamic threshold, which
    # let index merges' freed arrays pile up in the malloc arenas: hashwatch.service.allocator)
    malloc_mmap_threshold: int = 128 * 1024
    # malloc arenas at most (glibc's M_ARENA_MAX, set at worker start-up; 0 = glibc's default,
    # 8 per core: request threads come and go and each arena keeps its own free blocks)
    malloc_arena_max: int = 2
    # seconds between checks of the index against the store (0 = only on demand)
    reconcile_interval: float = 600.0
    # seconds between retries of an index save that failed (disk full): the worker serves
    # from memory meanwhile, and readiness shows the reason
    index_save_retry: float = 30.0
    # uploads
    max_upload_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 100_000_000
    max_batch: int = 1000
    # JSON request bodies (match/hashes: 1,000 hashes; entries: 10,000 entries)
    max_json_bytes: int = 16 * 1024 * 1024
    # decoding: child processes per worker, deadline per upload, memory cap per child,
    # and pixels decoded at once per worker (see hashwatch.service.isolation)
    decode_workers: int = 2
    decode_timeout: float = 20.0
    decode_memory_mb: int = 3072
    decode_pixel_budget: int = 100_000_000
    decode_isolation: bool = True
    # video uploads: decoded pixels x frames at most (4e9: ~16 min of 1080p at 30 fps)
    video_max_decoded_pixels: int = 4_000_000_000
    # video uploads: PDQ of one frame per second, at most this many frames
    video_max_samples: int = 600
    # vPDQ: a video matches a known vPDQ video when the share of its frames found there, and
    # the share of the known video's frames found, reach these (the reference's 80 / 0)
    vpdq_query_percent: float = 80.0
    vpdq_compared_percent: float = 0.0
    # requests per second per key (token bucket, burst = 2 s worth); a key may override
    rate_limit: float = 50.0
    rate_burst_seconds: float = 2.0
    # webhooks
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 12
    webhook_backoff_base: float = 2.0  # seconds before the 2nd attempt; doubles after
    webhook_backoff_max: float = 3600.0
    webhook_poll_interval: float = 1.0
    # webhook destinations: public addresses only, unless a network is listed here
    # (CIDR, e.g. "10.1.2.0/24" for a receiver inside the platform) or all are allowed
    webhook_allowed_networks: list[str] = field(default_factory=list)
    webhook_allow_private: bool = False
    webhook_lanes: int = 32  # destinations delivered at once (one lane per webhook)
    # a delivery claimed by a worker that died is retried after this many seconds
    webhook_lease: float = 60.0
    # review queue: keep a blurred thumbnail and a reduced clear preview of matched uploads
    review_queue: bool = True
    review_thumb_side: int = 256
    review_preview_side: int = 768
    # the thumbnail and clear preview are deleted this many seconds after the decision
    # (0 = at once); the purge runs every review_purge_interval seconds
    review_image_retention: float = 3600.0
    review_purge_interval: float = 60.0
    # URL fetch (off by default)
    url_fetch: bool = False
    url_allowed_hosts: list[str] = field(default_factory=list)
    url_allow_private: bool = False
    url_max_bytes: int = 20 * 1024 * 1024
    url_timeout: float = 10.0
    # private matching: a folder made by `hashwatch private setup` (off when empty)
    private_dir: str | None = None
    # background tasks can be switched off (e.g. the benchmark's extra workers)
    run_webhook_worker: bool = True

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults, then ``HASHWATCH_<FIELD>`` variables, then explicit overrides."""
        s = cls()
        for f in fields(cls):
            env = os.environ.get(f"HASHWATCH_{f.name.upper()}")
            if env is None:
                continue
            current = getattr(s, f.name)
            if isinstance(current, bool):
                value: object = _env_bool(env)
            elif isinstance(current, int):
                value = int(env)
            elif isinstance(current, float):
                value = float(env)
            elif isinstance(current, list):
                value = [x.strip() for x in env.split(",") if x.strip()]
            else:
                value = env
            setattr(s, f.name, value)
        if not s.db:
            s.db = os.environ.get("HASHWATCH_DB", "")
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        if not s.db:
            from hashwatch.store import default_db_path

            s.db = str(default_db_path())
        return s

    def __repr__(self) -> str:
        from hashwatch.store.redact import redact_url

        def shown(name: str) -> str:
            v = getattr(self, name)
            return repr(redact_url(v)) if name == "db" else repr(v)

        body = ", ".join(f"{f.name}={shown(f.name)}" for f in fields(self))
        return f"Settings({body})"

    def webhook_policy(self) -> DestinationPolicy:
        """The destination rules for webhooks (raises ValueError for a bad network)."""
        from hashwatch.service.destinations import DestinationPolicy

        return DestinationPolicy.from_settings(self.webhook_allow_private,
                                               self.webhook_allowed_networks)

    def url_policy(self) -> DestinationPolicy:
        """The destination rules for URL fetch."""
        from hashwatch.service.destinations import DestinationPolicy

        return DestinationPolicy(allow_private=self.url_allow_private)

    def index_file(self) -> Path | None:
        return Path(self.index_path) if self.index_path else None
