"""prefcenter: a relationship-marketing preference center and campaign engine."""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping
from typing import Any

from pyramid.config import Configurator
from pyramid.router import Router

from .settings import as_bool, resolve_settings


def main(global_config: Mapping[str, Any], **settings: Any) -> Router:
    """PasteDeploy app factory (``prefcenter:main``)."""
    app = make_wsgi_app(resolve_settings(settings, os.environ))
    if as_bool(app.registry.settings["prefcenter.worker.in_process"]):
        start_in_process_worker(app.registry)
    return app


def make_wsgi_app(settings: Mapping[str, Any]) -> Router:
    """Build the WSGI app from already resolved settings.

    Packages are included in this order: database and transactions, broker,
    translations, templates, the preference center's routes and views, then the campaign engine
    (which may use everything the preference center set up).
    """
    with Configurator(settings=dict(settings)) as config:
        config.include(".db")
        config.include(".broker")
        config.include(".i18n")
        config.include("pyramid_jinja2")
        config.add_jinja2_renderer(".html")
        config.add_jinja2_search_path("prefcenter:templates", name=".html")
        config.include(".portal.sessions")  # signed cookie sessions, CSRF on every form
        config.include(".routes")
        config.include(".api")
        config.include(".portal")
        config.scan(".views")
        config.include("campaigns")
    return config.make_wsgi_app()


def start_in_process_worker(registry: Any) -> Any:
    from . import tasks
    from .broker import InProcessWorker

    # The in-process worker (embedded mode) runs tasks with the app's own sessions.
    tasks.use_session_factory(registry["dbsession_factory"])
    tasks.use_settings(registry.settings)
    threads = int(registry.settings["prefcenter.worker.threads"])
    worker = InProcessWorker(registry["broker"], threads=threads).start()
    registry["in_process_worker"] = worker
    atexit.register(worker.stop)
    # Other packages' background services (the campaign scheduler) run beside the worker.
    for start in registry.get("in_process_services", []):
        worker.start_companion(start)
    return worker
