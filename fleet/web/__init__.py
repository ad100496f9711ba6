"""The fleet dashboard (``scalpedge fleet serve``): a read-only web app over the fleet store.

Starlette + Jinja2, served by uvicorn (the ``fleet`` extra); pages are rendered on the server
(plots as inline SVG), no JavaScript and no asset build. ``fleet.web.app`` lists the pages.
"""

from __future__ import annotations

from fleet.web.app import PAGE_SIZE, create_app
from fleet.web.serve import DEFAULT_HOST, DEFAULT_PORT, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "PAGE_SIZE", "create_app", "serve"]
