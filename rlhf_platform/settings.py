"""Django settings, all read from the environment (see README, "Configuration").

Defaults give the embedded quickstart: SQLite and a filesystem Celery broker under
``var/``, so `make demo` needs no server. Production sets DATABASE_URL (PostgreSQL),
CELERY_BROKER_URL (Redis or RabbitMQ), ARTIFACT_ROOT, SECRET_KEY and ALLOWED_HOSTS.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from rlhf_platform.env import (
    broker_url,
    database_config,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_str,
    secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret_key("SECRET_KEY", VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(VAR_DIR / "artifacts")))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "rlhf_platform.accounts",
    "rlhf_platform.campaigns",
    "rlhf_platform.rounds",
    "rlhf_platform.labeling",
    "rlhf_platform.budgets",
    "rlhf_platform.insights",
    "rlhf_platform.datafiles",
    "rlhf_platform.raters",
    "annotator_ui",
]

# All apps keep their migrations in the top-level migrations/ package.
MIGRATION_MODULES = {
    "accounts": "migrations.accounts",
    "campaigns": "migrations.campaigns",
    "rounds": "migrations.rounds",
    "labeling": "migrations.labeling",
    "budgets": "migrations.budgets",
    "insights": "migrations.insights",
    "raters": "migrations.raters",
}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF, which reads form bodies: a body over its limit is refused unread (413).
    "rlhf_platform.limits.BodySizeLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "annotator_ui.security.SecurityHeadersMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "rlhf_platform.urls"
WSGI_APPLICATION = "rlhf_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_config("DATABASE_URL", VAR_DIR / "db.sqlite3")}
# The fixed SQL of the labeling hot paths (rlhf_platform/labeling/pg.py, token checks) as
# server-side prepared statements on PostgreSQL; turn off behind a pooler in transaction
# mode that does not support them (PgBouncer before 1.21).
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
if DATABASE_PREPARED_STATEMENTS and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # psycopg prepares nothing on a connection without a threshold (Django's default). The
    # ORM's cursors bind client-side and never prepare, so this enables only the statements
    # that ask for it; the threshold itself is never reached.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 1_000_000)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Shared cache (login/token rate limits must be counted across web processes): Redis when
# CACHE_URL is set, else a per-process memory cache (fine for the one-process demo).
_cache_url = env_str("CACHE_URL", "")
if _cache_url and not _cache_url.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured(f"CACHE_URL={_cache_url!r} must be a redis:// URL")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}
        if _cache_url
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Security (production values unless DEBUG; see docs/security.md) ----------------------
HTTPS = env_bool("HTTPS", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG and HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
# Cookies: never readable by scripts (the CSRF token reaches htmx through the page, see
# annotator_ui/templates/annotator_ui/base.html), sent only over HTTPS when the site is
# served over it, and not on cross-site requests.
SESSION_COOKIE_SECURE = HTTPS
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 14 * 24 * 3600, minimum=60)
CSRF_COOKIE_SECURE = HTTPS
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Failed logins (API token and login page) before 429 `too_many_login_attempts`, per
# username and client address, and per client address; counted in CACHES over the window.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
LOGIN_IP_FAILURE_LIMIT = env_int("LOGIN_IP_FAILURE_LIMIT", 100, minimum=1)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("LOGIN_FAILURE_WINDOW_SECONDS", 900, minimum=1)

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rlhf_platform.api.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "rlhf_platform.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RLHF annotation platform API",
    "DESCRIPTION": "Campaigns, pairwise comparisons, labels and budgets. Errors are JSON "
    'objects `{"code": ..., "message": ...}` with a stable machine-readable code.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "CampaignStateEnum": "rlhf_platform.campaigns.models.CampaignState",
        "RoundStateEnum": "rlhf_platform.rounds.models.RoundState",
        "ImportFormatEnum": ["jsonl", "csv", "parquet"],
        "ChoiceEnum": ["A", "B", "tie", "both_bad"],  # a label's choice, a gold answer
    },
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "rlhf_platform.api.links.add_links",  # OpenAPI links between operations
    ],
}

# --- Labeling rules -----------------------------------------------------------------------
LEASE_SECONDS = env_int("LEASE_SECONDS", 300, minimum=10)
# An annotator may take back their last label this long after giving it (0: never), as
# long as no round has consumed it.
LABEL_UNDO_SECONDS = env_int("LABEL_UNDO_SECONDS", 30, minimum=0)
RATIONALE_MAX_LENGTH = 2000  # documented in the API schema and README

# --- Size limits (rlhf_platform/limits.py; the table is in docs/security.md) ------------------
# Any request body, except imports. Django's own default, so every form keeps working.
REQUEST_MAX_BYTES = env_int("REQUEST_MAX_BYTES", 2_621_440, minimum=65_536)
# An imported file (multipart), or the UTF-8 bytes of the JSON `content` of an import.
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 20 * 2**20, minimum=65_536)
# The body of an import request: JSON escaping lengthens text (`"` is sent as `\"`), so
# twice the file plus room for the other fields.
IMPORT_REQUEST_MAX_BYTES = 2 * IMPORT_MAX_BYTES + 2**20
# Backstop for bodies without Content-Length; the middleware applies the per-view limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = IMPORT_REQUEST_MAX_BYTES
# One prompt, one response (imported, or generated: model output is cut to it).
PROMPT_MAX_CHARS = env_int("PROMPT_MAX_CHARS", 20_000, minimum=100)
RESPONSE_MAX_CHARS = env_int("RESPONSE_MAX_CHARS", 50_000, minimum=100)

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = broker_url("CELERY_BROKER_URL")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for sub in ("out", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis", "rediss")):
    # Redis redelivers a message whose worker died (acks_late) after this many seconds.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3900, minimum=1)
    }
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues by resource: generation and training on `gpu` workers, network-bound judge calls on
# `judge` workers (high concurrency), bookkeeping on `default`.
CELERY_TASK_ROUTES = {
    "rounds.step": {"queue": "gpu"},
    "rounds.open": {"queue": "gpu"},
    "rounds.judge": {"queue": "judge"},
    "judges.trial": {"queue": "judge"},
    "rounds.sweep": {"queue": "default"},
    "labeling.*": {"queue": "default"},
    "raters.*": {"queue": "default"},
}
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3300, minimum=1)
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT")
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A web request that enqueues work must not hang while the broker is down: give up quickly
# (the periodic sweep sends the work later).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BEAT_SCHEDULE = {
    "release-expired-leases": {
        "task": "labeling.release_expired_leases",
        "schedule": timedelta(seconds=env_int("LEASE_SWEEP_SECONDS", 30, minimum=1)),
    },
    # Closes overdue rounds and resends work whose message or worker was lost.
    "rounds-sweep": {
        "task": "rounds.sweep",
        "schedule": timedelta(seconds=env_int("ROUND_SWEEP_SECONDS", 15, minimum=1)),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    },
}

# --- Online rounds ------------------------------------------------------------------------
# A round step whose worker has not sent a heartbeat for this long is taken over by another.
ROUND_CLAIM_STALE_SECONDS = env_int("ROUND_CLAIM_STALE_SECONDS", 600, minimum=1)
# Invalid judge answers per comparison before it is sent to the human queue instead.
JUDGE_MAX_ATTEMPTS = env_int("JUDGE_MAX_ATTEMPTS", 3, minimum=1)
