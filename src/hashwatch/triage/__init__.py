"""Investigator triage: seized media in, categorised counts and a court-ready report out.

``run_triage`` walks folders and archives, hashes every file in a process pool (resumable),
matches against the lists, clusters unknown images; ``grading`` records analysts' votes;
``promote`` adds trusted-grade material to a list; ``report`` writes the case outputs.
"""

# loaded on first use: the CLI imports hashwatch.triage.cli for every command, and the run
# module pulls in the matcher, the store and the decoders
__all__ = ["CaseError", "TriageOptions", "TriageSummary", "run_triage"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from hashwatch.triage import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
