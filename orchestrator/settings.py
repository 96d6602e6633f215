"""Django settings for Sluice.

Every knob is read once, here, from the environment, so the same code runs on the embedded
default (bundled broker, SQLite, one machine) and in production (a Kafka cluster, PostgreSQL,
several web processes) without edits. See README.md "Production" for the full list.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Where the embedded default keeps its broker data, SQLite database and generated secret key.
DATA_DIR = Path(os.environ.get("SLUICE_DATA_DIR", BASE_DIR / "var")).resolve()
DEBUG = env_bool("DJANGO_DEBUG", False)
# True on the embedded default (`make up` with the bundled broker): the runtime then works around
# the broker's known limits, and a secret key may be generated into the data dir.
SLUICE_EMBEDDED_BROKER = env_bool("SLUICE_EMBEDDED_BROKER", "KAFKA_BOOTSTRAP_SERVERS" not in os.environ)


def _secret_key() -> str:
    """DJANGO_SECRET_KEY in production; on the embedded default (or with DEBUG on) a key generated
    once per data dir. Production without one refuses to start: a generated key would differ per
    host and sign sessions nobody can check elsewhere (and it lives in a file next to the data)."""
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    if not (DEBUG or SLUICE_EMBEDDED_BROKER):
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Production (a Kafka cluster named by KAFKA_BOOTSTRAP_SERVERS, "
            "DJANGO_DEBUG off) needs a secret key of its own, the same for every process: set DJANGO_SECRET_KEY "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))').")
    path = DATA_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
# HTTPS (README "Production"): behind a TLS-terminating proxy, trust its X-Forwarded-Proto;
# cookies only over HTTPS; plain HTTP redirected to HTTPS; HSTS so browsers never try HTTP again.
# Off by default: the embedded default serves plain HTTP on 127.0.0.1.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("SLUICE_BEHIND_TLS_PROXY") else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SLUICE_SECURE_COOKIES", False)
SECURE_SSL_REDIRECT = env_bool("SLUICE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("SLUICE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SLUICE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SLUICE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # swagger-ui assets served locally: the docs page needs no CDN
    "django_celery_beat",
    "orchestrator",
    "designer",
    "monitor",
    "triggers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "orchestrator.urls"
ASGI_APPLICATION = "orchestrator.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "monitor.permissions.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'sluice.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if "DATABASE_URL" not in os.environ:
    DATA_DIR.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several processes (web, bridge, celery) write the embedded SQLite file at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so a live server process in the tests shares the test database.
    # Named per process: two test sessions at once must not share (and destroy) one file.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"

# Channels: one process needs no shared layer; several web processes share Redis.
REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL}], "capacity": 10000},
        }
    }
else:
    # The default capacity (100) silently drops bursts; history arrives in bursts.
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "monitor.channel_layer.SweepingInMemoryChannelLayer", "CONFIG": {"capacity": 100000}}
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every API error as JSON of one shape, with field paths (webbase/api.py).
    "EXCEPTION_HANDLER": "webbase.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sluice API",
    "DESCRIPTION": "Workflow definitions, versions, publishing and runs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    # Shared error answers and closed request bodies (webbase/openapi.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "webbase.openapi.document_errors"],
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several "status" fields: give each enum a stable, readable name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "monitor.models.RunStatus",
        "StepStatusEnum": "monitor.models.StepStatus",
        "DeadLetterStatusEnum": "monitor.models.DeadLetter.Status",
        "VersionStatusEnum": ["draft", "live", "published"],
        "WorkflowStatusEnum": ["archived", "draft", "live", "changed"],
    },
}

# ---- Kafka -------------------------------------------------------------------------------
# On the embedded default `manage.py up` starts the bundled broker on SLUICE_KAFKA_PORT.
KAFKA_PORT = int(os.environ.get("SLUICE_KAFKA_PORT", "9092"))
KAFKA_BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{KAFKA_PORT}")
# Extra librdkafka settings for a real cluster, e.g. "security.protocol=SASL_SSL,sasl.mechanism=PLAIN".
KAFKA_CLIENT_CONFIG = dict(
    item.split("=", 1) for item in env_list("KAFKA_CLIENT_CONFIG") if "=" in item
)
KAFKA_SASL_PASSWORD = os.environ.get("KAFKA_SASL_PASSWORD")  # kept apart so it never lands in logs
if KAFKA_SASL_PASSWORD:
    KAFKA_CLIENT_CONFIG["sasl.password"] = KAFKA_SASL_PASSWORD
SLUICE_TOPIC_PREFIX = os.environ.get("SLUICE_TOPIC_PREFIX", "wf.")
SLUICE_PARTITIONS = int(os.environ.get("SLUICE_PARTITIONS", "4"))
SLUICE_REPLICATION_FACTOR = int(os.environ.get("SLUICE_REPLICATION_FACTOR", "1"))
# Run input (API, designer test runs, webhooks, re-runs, dead-letter replays) larger than this,
# as JSON, is refused with 413: the start command, the first history event and the run state
# must stay well below the broker's record limit (about 1,048,516 bytes).
SLUICE_MAX_INPUT_BYTES = int(os.environ.get("SLUICE_MAX_INPUT_BYTES", str(256 * 1024)))
# A definition is published as one record too.
SLUICE_MAX_DEFINITION_BYTES = int(os.environ.get("SLUICE_MAX_DEFINITION_BYTES", str(512 * 1024)))
# Records a partition a consumer's fetcher reads ahead of its loop (orchestrator/runtime/kafka.py).
SLUICE_CONSUMER_PREFETCH = int(os.environ.get("SLUICE_CONSUMER_PREFETCH", "2000"))
# How long the bridge waits for more history after a batch's first record (monitor/projector.py).
SLUICE_PROJECTOR_LINGER_MS = int(os.environ.get("SLUICE_PROJECTOR_LINGER_MS", "50"))
# Identity of this runner process for static group membership; stable across restarts.
SLUICE_INSTANCE_ID = os.environ.get("SLUICE_INSTANCE_ID", "")
# Size limits, all below the broker's record limit (about 1,048,516 bytes on the embedded
# broker; `message.max.bytes` on a cluster): no record Sluice writes may exceed
# SLUICE_MAX_RECORD_BYTES; a run's state (its input and every step output) must fit in
# SLUICE_MAX_STATE_BYTES, and one run input or step output in SLUICE_MAX_PAYLOAD_BYTES.
SLUICE_MAX_RECORD_BYTES = int(os.environ.get("SLUICE_MAX_RECORD_BYTES", "1000000"))
SLUICE_MAX_STATE_BYTES = int(os.environ.get("SLUICE_MAX_STATE_BYTES", "900000"))
SLUICE_MAX_PAYLOAD_BYTES = int(os.environ.get("SLUICE_MAX_PAYLOAD_BYTES", str(256 * 1024)))
# Memory one `lookup` table (a topic kept in each worker process) may take; over it, the table
# is dropped and its lookups fail (orchestrator/runtime/tables.py).
SLUICE_LOOKUP_MAX_BYTES = int(os.environ.get("SLUICE_LOOKUP_MAX_BYTES", str(64 * 1024 * 1024)))
# A step dispatched to workers that no worker has picked up within this time is dispatched
# again (same attempt, same idempotency key): Temporal's schedule-to-start timeout.
SLUICE_SCHEDULE_TO_START_SECONDS = float(os.environ.get("SLUICE_SCHEDULE_TO_START_SECONDS", "60"))
# Modules imported by runners so their @handler functions register (comma separated).
SLUICE_HANDLER_MODULES = env_list("SLUICE_HANDLER_MODULES", "demo.handlers")

# ---- Celery ------------------------------------------------------------------------------
# Celery only carries schedule ticks and housekeeping, a few messages a minute. On the embedded
# default it uses kombu's filesystem transport in the data dir: the embedded broker ignores the
# fetch long-poll, so kombu's Kafka transport (which cannot pause its fetcher) kept a core half
# busy doing nothing, while the filesystem transport lists one directory per poll. A cluster
# gets kombu's Kafka transport on it; CELERY_BROKER_URL (Redis, RabbitMQ, ...) wins over both.
SLUICE_CELERY_QUEUE_DIR = DATA_DIR / "celery"
SLUICE_CELERY_POLLING_INTERVAL = 0.2  # seconds between directory listings: the pick-up delay
if os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
elif SLUICE_EMBEDDED_BROKER:
    CELERY_BROKER_URL = "filesystem://localhost//"  # a host named, or kombu warns on every connect
else:
    CELERY_BROKER_URL = f"confluentkafka://{KAFKA_BOOTSTRAP_SERVERS}"
if CELERY_BROKER_URL.startswith("filesystem:"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # One folder for both directions: every process on this machine sends and reads there.
        "data_folder_in": str(SLUICE_CELERY_QUEUE_DIR / "messages"),
        "data_folder_out": str(SLUICE_CELERY_QUEUE_DIR / "messages"),
        "control_folder": str(SLUICE_CELERY_QUEUE_DIR / "control"),
        "polling_interval": SLUICE_CELERY_POLLING_INTERVAL,
    }
elif CELERY_BROKER_URL.startswith("confluentkafka:"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"wait_time_seconds": 1}
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_TASK_IGNORE_RESULT = True
# Modules of Celery tasks that celery_task steps may send, for Sluice's own celery worker.
CELERY_IMPORTS = env_list("SLUICE_CELERY_TASK_MODULES", "demo.tasks")
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
# Run rows older than this are purged by the retention task (0 keeps them for ever).
SLUICE_RUN_RETENTION_DAYS = int(os.environ.get("SLUICE_RUN_RETENTION_DAYS", "30"))

# HTTP client libraries log every request's URL, query string included (API keys travel
# there), at INFO (httpx) or DEBUG (httpcore, urllib3): they log warnings only, unless
# SLUICE_HTTP_LOG_LEVEL says otherwise. Every line also passes MaskSecretsFilter, which hides
# the secret values this process resolved for a step (orchestrator/secrets.py), before the
# formatter sees it. SLUICE_LOG_FORMAT=json writes one JSON object per line, with the run and
# step a line belongs to (orchestrator/observability/logs.py).
_HTTP_LOG_LEVEL = os.environ.get("SLUICE_HTTP_LOG_LEVEL", "WARNING")
SLUICE_LOG_FORMAT = os.environ.get("SLUICE_LOG_FORMAT", "plain").strip().lower()
if SLUICE_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"SLUICE_LOG_FORMAT is {SLUICE_LOG_FORMAT!r}; it must be 'plain' or 'json'")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "mask_secrets": {"()": "orchestrator.secrets.MaskSecretsFilter"},
        "log_context": {"()": "orchestrator.observability.logs.ContextFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "orchestrator.observability.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": SLUICE_LOG_FORMAT,
                             "filters": ["mask_secrets", "log_context"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("SLUICE_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        **{name: {"level": _HTTP_LOG_LEVEL} for name in ("httpx", "httpcore", "urllib3")},
    },
}

# ---- Operations: metrics, health, alerts (docs/operations.md) -----------------------------
# /metrics (web) and the metrics ports of runners and bridges (--metrics-port) answer a request
# that carries `Authorization: Bearer <SLUICE_METRICS_TOKEN>`, or that comes from one of
# SLUICE_METRICS_ALLOWED_NETWORKS (CIDRs). With neither set, the web's /metrics answers no one,
# and a metrics port serves only the loopback address it listens on by default.
SLUICE_METRICS_TOKEN = os.environ.get("SLUICE_METRICS_TOKEN", "")
SLUICE_METRICS_ALLOWED_NETWORKS = env_list("SLUICE_METRICS_ALLOWED_NETWORKS")
# Links in alert notifications point here (e.g. https://sluice.example.com); without it they
# are left out.
SLUICE_BASE_URL = os.environ.get("SLUICE_BASE_URL", "").rstrip("/")
# Failure notifications: how many times a send is tried before it is given up (logged).
SLUICE_ALERT_ATTEMPTS = int(os.environ.get("SLUICE_ALERT_ATTEMPTS", "5"))
# Email alerts go through Django's mail settings. Without EMAIL_HOST they are written to the
# bridge's output (console backend), so nothing is sent by surprise on the embedded default.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = 20
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "sluice@localhost")
