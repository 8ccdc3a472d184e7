"""``hashwatch serve``: the matching service for platforms (FastAPI + Uvicorn).

``create_app(settings)`` in :mod:`hashwatch.service.app` builds the app; the CLI entry
points live in :mod:`hashwatch.service.cli` (``register(app)``).
"""
