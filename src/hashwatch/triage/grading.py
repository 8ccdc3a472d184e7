"""Analysts' grades as votes, and the rule that makes a grade trusted.

A vote is (case, target, category, analyst, time, note) where the target is a cluster of the
case (``cluster:N``) or one file by content (``file:<sha256>``). Votes are only ever added
(the table refuses updates and deletes); an analyst who changes their mind adds a new vote,
and their latest vote on a target is the one that counts.

A file's effective votes are those on its cluster and on the file itself (a file vote is later
than, and so overrides, the same analyst's cluster vote only if it is newer).

Default rule: trusted when at least 3 different analysts agree and nobody dissents. Any
disagreement beyond ``max_dissent`` makes the target *disputed*, shown as such, never resolved.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from hashwatch.categories import Category
from hashwatch.store import Store
from hashwatch.triage.schema import triage_votes

__all__ = [
    "GradeRule",
    "GradeStatus",
    "Vote",
    "add_vote",
    "case_grades",
    "decide",
    "file_grades",
    "list_votes",
    "resolve_target",
]

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class GradeError(ValueError):
    """A vote that cannot be recorded as asked."""


@dataclass(frozen=True)
class GradeRule:
    min_votes: int = 3  # agreeing votes from different analysts
    max_dissent: int = 0  # analysts allowed to disagree while still trusted

    def __post_init__(self) -> None:
        if self.min_votes < 1 or self.max_dissent < 0:
            raise ValueError("min_votes must be >= 1 and max_dissent >= 0")

    def describe(self) -> str:
        dissent = ("no dissent" if self.max_dissent == 0
                   else f"at most {self.max_dissent} dissenting")
        return f"{self.min_votes} agreeing votes from different analysts, {dissent}"


@dataclass(frozen=True)
class Vote:
    id: int
    case_id: str
    target: str
    category: Category
    analyst: str
    at: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "case": self.case_id, "target": self.target,
                "category": str(self.category), "analyst": self.analyst, "at": self.at,
                "note": self.note}


@dataclass
class GradeStatus:
    target: str
    status: str  # ungraded | pending | trusted | disputed
    category: Category | None = None  # the agreed (or leading) category
    votes: list[Vote] = field(default_factory=list)  # effective: latest per analyst
    history: list[Vote] = field(default_factory=list)  # every vote, oldest first

    def tally(self) -> dict[str, int]:
        return dict(Counter(str(v.category) for v in self.votes).most_common())

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status,
                "category": str(self.category) if self.category else None,
                "tally": self.tally(), "votes": [v.as_dict() for v in self.votes],
                "history": len(self.history)}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def resolve_target(conn: sqlite3.Connection, *, cluster: int | None = None,
                   file: str | None = None) -> str:
    """``cluster:N`` or ``file:<sha256>`` for a cluster number, or a file given by SHA-256 or by
    its path as written in files.csv; checked against the case's results."""
    if (cluster is None) == (file is None):
        raise GradeError("give exactly one of a cluster number or a file (SHA-256 or path)")
    if cluster is not None:
        if conn.execute("SELECT 1 FROM clusters WHERE cluster = ?", (cluster,)).fetchone() is None:
            raise GradeError(f"the case has no cluster {cluster}")
        return f"cluster:{cluster}"
    assert file is not None
    if _SHA256.match(file):
        row = conn.execute("SELECT sha256 FROM files WHERE sha256 = ? LIMIT 1",
                           (file.lower(),)).fetchone()
    else:
        row = conn.execute("SELECT sha256 FROM files WHERE path = ?", (file,)).fetchone()
    if row is None or not row["sha256"]:
        raise GradeError(f"the case has no file {file!r} (give its SHA-256 or path from "
                         "files.csv)")
    return f"file:{row['sha256']}"


def add_vote(store: Store, case_id: str, target: str, category: Category, analyst: str,
             note: str = "") -> Vote:
    """Record one vote (never replaces an earlier one) and audit it."""
    analyst = analyst.strip()
    if not analyst or len(analyst) > 200:
        raise GradeError("an analyst id is required (1-200 characters)")
    if not re.match(r"^(cluster:\d+|file:[0-9a-f]{64})$", target):
        raise GradeError(f"invalid grading target {target!r}")
    at = _now()
    with store.engine.begin() as conn:
        res = conn.execute(triage_votes.insert().values(
            case_id=case_id, target=target, category_scheme=category.scheme,
            category_code=category.code, analyst=analyst, at=at, note=note))
        vote_id = res.inserted_primary_key[0]
    store.audit(analyst, "triage.vote", {"case": case_id, "target": target,
                                         "category": str(category), "vote": vote_id})
    return Vote(vote_id, case_id, target, category, analyst, at, note)


def list_votes(store: Store, case_id: str) -> list[Vote]:
    q = (sa.select(triage_votes).where(triage_votes.c.case_id == case_id)
         .order_by(triage_votes.c.id))
    with store.engine.connect() as conn:
        return [Vote(r.id, r.case_id, r.target, Category(r.category_scheme, r.category_code),
                     r.analyst, r.at, r.note) for r in conn.execute(q)]


def decide(target: str, votes: list[Vote], rule: GradeRule = GradeRule()) -> GradeStatus:
    """Status of a target from all its votes (oldest first)."""
    latest: dict[str, Vote] = {}
    for v in sorted(votes, key=lambda v: (v.at, v.id)):
        latest[v.analyst] = v
    eff = sorted(latest.values(), key=lambda v: v.id)
    st = GradeStatus(target, "ungraded", None, eff, list(votes))
    if not eff:
        return st
    tally = Counter(v.category for v in eff)
    top, n_top = tally.most_common(1)[0]
    tied = [c for c, n in tally.items() if n == n_top]
    dissent = len(eff) - n_top
    if len(tied) == 1 and n_top >= rule.min_votes and dissent <= rule.max_dissent:
        st.status, st.category = "trusted", top
    elif len(tally) > 1:
        st.status, st.category = "disputed", top if len(tied) == 1 else None
    else:
        st.status, st.category = "pending", top
    return st


def case_grades(store: Store, case_id: str, rule: GradeRule = GradeRule()) -> list[GradeStatus]:
    """Status of every target that has votes, in order of first vote."""
    by_target: dict[str, list[Vote]] = {}
    for v in list_votes(store, case_id):
        by_target.setdefault(v.target, []).append(v)
    return [decide(t, vs, rule) for t, vs in by_target.items()]


def file_grades(store: Store, case_id: str, conn: sqlite3.Connection,
                rule: GradeRule = GradeRule()) -> dict[str, GradeStatus]:
    """Status per file content (SHA-256) of every file with votes on it or on its cluster."""
    by_target: dict[str, list[Vote]] = {}
    for v in list_votes(store, case_id):
        by_target.setdefault(v.target, []).append(v)
    out: dict[str, GradeStatus] = {}
    if not by_target:
        return out
    files: dict[str, set[int]] = {}
    for r in conn.execute("SELECT sha256, cluster FROM files WHERE sha256 IS NOT NULL"):
        files.setdefault(r["sha256"], set())
        if r["cluster"] is not None:
            files[r["sha256"]].add(r["cluster"])
    for sha, clusters in files.items():
        votes = list(by_target.get(f"file:{sha}", []))
        for c in sorted(clusters):
            votes += by_target.get(f"cluster:{c}", [])
        if votes:
            out[sha] = decide(f"file:{sha}", votes, rule)
    return out
