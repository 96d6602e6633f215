"""Production settings: `manage.py check --deploy` is clean with the documented variables, and a
production process without DJANGO_SECRET_KEY refuses to start (no generated key file)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HTTPS = {"SLUICE_BEHIND_TLS_PROXY": "1", "SLUICE_SECURE_COOKIES": "1", "SLUICE_SSL_REDIRECT": "1",
         "SLUICE_HSTS_SECONDS": "31536000", "SLUICE_HSTS_INCLUDE_SUBDOMAINS": "1", "SLUICE_HSTS_PRELOAD": "1"}


def manage(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    """`manage.py <args>` with only the given variables (plus PATH), as a fresh process would run."""
    environment = {"PATH": os.environ["PATH"], "SLUICE_DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


def production(**extra) -> dict:
    return {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "sluice.example.com",
            "DJANGO_CSRF_TRUSTED_ORIGINS": "https://sluice.example.com", **extra}


def test_check_deploy_is_clean_with_the_documented_production_variables(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **production(**HTTPS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_without_https_settings_check_deploy_names_what_is_missing(tmp_path):
    result = manage(tmp_path, "check", "--deploy", **production())
    output = result.stdout + result.stderr
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in output, warning


def test_production_without_a_secret_key_refuses_to_start(tmp_path):
    env = production(**HTTPS)
    del env["DJANGO_SECRET_KEY"]
    result = manage(tmp_path, "check", **env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "data" / "secret_key").exists()


def test_the_embedded_default_generates_its_key_once(tmp_path):
    first = manage(tmp_path, "check")
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "data" / "secret_key"
    key = key_file.read_text()
    assert len(key) > 40 and oct(key_file.stat().st_mode)[-3:] == "600"
    assert manage(tmp_path, "check").returncode == 0 and key_file.read_text() == key
