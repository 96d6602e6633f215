"""The ASGI application plus static files, for the single-machine default (`manage.py up`).

daphne serves no static files and Django serves them only with DEBUG on; on the embedded
default there is no reverse proxy in front, so the canvas scripts and styles must come from the
web process itself. Production puts a proxy or CDN on /static/ (collectstatic into
STATIC_ROOT) and runs plain `orchestrator.asgi:application`.
"""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from .asgi import application as sluice_application

application = ASGIStaticFilesHandler(sluice_application)
