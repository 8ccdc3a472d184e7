"""The scale-out path for serving (examples/replicas.py): two ``hashwatch serve`` replicas as
separate processes on one PostgreSQL, behind a round-robin client. An entry added through one
replica is matched by both; a staggered restart (one replica at a time, the next only once
the previous is ready) fails no request."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from conftest_pg import pg_db, pg_url  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from replicas import NoReplica, Replicas, RoundRobin  # noqa: E402

from hashwatch.service.auth import create_key  # noqa: E402
from hashwatch.store import Store  # noqa: E402

PDQ = "58f8f0cee0f4e84f06370a22038c63f0b36e2ed596621e1d33e6b39c4e9c9b22"
FAR = "a707" * 16  # far from PDQ


@pytest.mark.slow
def test_two_replicas_round_robin_and_staggered_restart(pg_db, tmp_path):  # noqa: F811
    with Store.open(pg_db) as store:
        key = create_key(store, "ops", "admin", actor="test")
    reps = Replicas(pg_db, tmp_path, n=2)
    client = RoundRobin(reps.urls, key)
    try:
        r = client.request("POST", "/v1/lists", json={"name": "caid"})
        assert r.status_code == 201, r.text
        r = client.request("POST", "/v1/lists/caid/entries", json={"entries": [
            {"signal_type": "pdq", "value": PDQ, "category": "uk:A", "ref": "known-1"}]})
        assert r.status_code == 201, r.text
        added_via = client.served_by[-1]

        def hits(url: str) -> list:
            c = RoundRobin([url], key)
            try:
                r = c.request("POST", "/v1/match/hashes", json={"hashes": [
                    {"signal_type": "pdq", "value": PDQ}, {"signal_type": "pdq", "value": FAR}]})
                assert r.status_code == 200, r.text
                return [x["matches"] for x in r.json()["results"]]
            finally:
                c.close()

        # the other replica follows the change feed in the shared database
        other = next(u for u in reps.urls if u != added_via)
        deadline = time.monotonic() + 30
        while not hits(other)[0]:
            assert time.monotonic() < deadline, "the other replica never saw the new entry"
            time.sleep(0.2)
        for url in reps.urls:
            got = hits(url)
            assert got[0][0]["ref"] == "known-1" and got[0][0]["distance"] == 0
            assert got[1] == []
        # round robin spreads requests over both
        client.served_by.clear()
        for _ in range(6):
            client.request("GET", "/v1/lists")
        assert sorted(set(client.served_by)) == sorted(reps.urls)

        # staggered restart under a steady stream of requests: none fails
        failures: list[str] = []
        answered = [0]
        stop = threading.Event()

        def load() -> None:
            c = RoundRobin(reps.urls, key)
            while not stop.is_set():
                try:
                    r = c.request("POST", "/v1/match/hashes",
                                  json={"hashes": [{"signal_type": "pdq", "value": PDQ}]})
                    if r.status_code != 200 or not r.json()["results"][0]["matches"]:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    answered[0] += 1
                except NoReplica as exc:
                    failures.append(str(exc))
                time.sleep(0.02)
            c.close()

        th = threading.Thread(target=load)
        th.start()
        try:
            reps.rolling_restart()
        finally:
            stop.set()
            th.join(30)
        assert answered[0] > 10 and failures == []
    finally:
        client.close()
        reps.close()
