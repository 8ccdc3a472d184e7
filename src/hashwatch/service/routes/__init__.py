"""One router per resource of the HTTP API (``/v1``): health, match, lists, webhooks, admin
(keys and audit), review and private matching. ``create_app`` in
:mod:`hashwatch.service.app` includes them."""
