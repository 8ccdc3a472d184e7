"""Investigator triage: seized media in, categorised counts and a court-ready report out.

``run_triage`` walks folders and archives, hashes every file in a process pool (resumable),
matches against the lists, clusters unknown images; ``grading`` records analysts' votes;
``promote`` adds trusted-grade material to a list; ``report`` writes the case outputs.
"""

from hashwatch.triage.run import CaseError, TriageOptions, TriageSummary, run_triage

__all__ = ["CaseError", "TriageOptions", "TriageSummary", "run_triage"]
