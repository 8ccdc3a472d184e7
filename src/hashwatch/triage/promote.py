"""Trusted-grade material of a case → entries of a hash list, with provenance.

Each promoted file adds its MD5, SHA-1, SHA-256 and PDQ (video: the PDQ of its sampled frames,
as ``frame@SECONDS`` variants) with the trusted category. Provenance travels with the entries:
``source_ref`` names the case, ``labels`` hold the case, the vote ids and the analysts, and the
audit log records the promotion. A file the list already holds (same SHA-256 or MD5, whatever
its category) is not added again: it is counted, and a different category there is reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hashwatch.signals.pdq import PDQ_MIN_QUALITY
from hashwatch.store import EntryIn, Store
from hashwatch.triage.grading import GradeRule, file_grades
from hashwatch.triage.run import check_store_case, list_versions, open_workdb

__all__ = ["PromoteResult", "promote"]


@dataclass
class PromoteResult:
    case_id: str
    list_name: str
    files_promoted: int = 0
    entries_added: int = 0
    entries_duplicate: int = 0
    already_in_list: int = 0
    not_trusted: dict[str, int] = field(default_factory=dict)  # status -> files
    category_differs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def promote(store: Store, case_id: str, list_name: str, *, rule: GradeRule = GradeRule(),
            actor: str = "cli") -> PromoteResult:
    list_versions(store, [list_name])  # ListNotFound before any work (cheap: no count)
    out = check_store_case(store, case_id)
    conn = open_workdb(out, create=False)
    try:
        grades = file_grades(store, case_id, conn, rule)
        res = PromoteResult(case_id, list_name)
        trusted = {}
        for sha, g in grades.items():
            if g.status == "trusted":
                trusted[sha] = g
            else:
                res.not_trusted[g.status] = res.not_trusted.get(g.status, 0) + 1
        if not trusted:
            store.audit(actor, "triage.promote", {"case": case_id, "files": 0,
                                                  "rule": rule.describe()}, list_name=list_name)
            return res
        rows = {}
        for r in conn.execute("SELECT id, sha256, md5, sha1, pdq, pdq_quality, kind FROM files "
                              "WHERE sha256 IS NOT NULL ORDER BY id"):
            if r["sha256"] in trusted and r["sha256"] not in rows:
                rows[r["sha256"]] = r
        # de-duplicate against what the list already holds, whatever the category there
        held: dict[str, set[str]] = {}
        for sig in ("sha256", "md5"):
            values = [rows[s][sig] for s in rows]
            for e in store.lookup(sig, values, lists=[list_name]):
                held.setdefault(e.value, set()).add(str(e.category) if e.category else "")
        items: list[EntryIn] = []
        promoted_votes: list[int] = []
        for sha, r in rows.items():
            g = trusted[sha]
            cat = g.category
            assert cat is not None
            found = held.get(sha) or held.get(r["md5"])
            if found:
                res.already_in_list += 1
                if str(cat) not in found:
                    res.category_differs.append({"sha256": sha, "trusted": str(cat),
                                                 "in_list": sorted(found)})
                continue
            labels = (f"case:{case_id}",
                      "votes:" + ",".join(str(v.id) for v in g.votes),
                      "analysts:" + ",".join(sorted({v.analyst for v in g.votes})))
            promoted_votes += [v.id for v in g.votes]

            def entry(sig: str, value: str, variant: str = "", _l: Any = labels,
                      _c: Any = cat, _s: str = sha) -> EntryIn:
                return EntryIn(sig, value, category=_c, labels=_l, source_ref=f"case:{case_id}",
                               group_ref=_s, variant=variant)

            items += [entry(sig, r[sig]) for sig in ("md5", "sha1", "sha256")]
            if r["kind"] == "video":
                for f in conn.execute("SELECT t, pdq, quality FROM frames WHERE file_id = ? "
                                      "ORDER BY t", (r["id"],)):
                    if f["quality"] >= PDQ_MIN_QUALITY:
                        items.append(entry("pdq", f["pdq"], f"frame@{f['t']:g}s"))
            elif r["pdq"] and (r["pdq_quality"] or 0) >= PDQ_MIN_QUALITY:
                items.append(entry("pdq", r["pdq"]))
            res.files_promoted += 1
    finally:
        conn.close()

    def stream() -> Iterator[EntryIn]:
        yield from items

    add = store.add_entries(
        list_name, stream(), actor=actor, action="entries.promote",
        detail={"case": case_id, "files": res.files_promoted, "votes": sorted(set(promoted_votes)),
                "rule": rule.describe(), "already_in_list": res.already_in_list})
    res.entries_added = add.added + add.restored
    res.entries_duplicate = add.duplicates
    return res
