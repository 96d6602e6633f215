"""Operating Sluice: metrics endpoints, health and readiness, structured logs.

Modules here that the runtime imports (logs) stay free of web apps; the web views live in
views.py and are only imported by the URL configuration.
"""
