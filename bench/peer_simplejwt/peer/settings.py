"""The peer: djangorestframework-simplejwt with refresh rotation and its blacklist app.

Configured to match authsvc in the benchmark: RS256 with a 2048-bit key, argon2id with the same
time/memory/parallelism, the same database (SQLite file or the PostgreSQL database the runner
made), persistent connections, no debug, served by uvicorn (ASGI) with the same workers.
Everything comes from the environment the runner sets (PEER_*).
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = os.environ.get("PEER_SECRET_KEY", "bench-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "peer.urls"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]

_db = urlparse(os.environ["PEER_DATABASE_URL"])
if _db.scheme == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _db.path,
            # The same SQLite setup authsvc uses: WAL, synchronous=NORMAL, writers take the
            # lock up front (Django >= 5.1 transaction_mode), a generous busy timeout.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            "CONN_MAX_AGE": None,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _db.path.lstrip("/"),
            "USER": _db.username or "postgres",
            "PASSWORD": _db.password or "",
            "HOST": _db.hostname or "127.0.0.1",
            "PORT": str(_db.port or 5432),
            # A pool of at most 10 connections per process, like authsvc's. Without it each of
            # the threads Django runs sync views in opens its own connection, which ran the
            # shared server out of connections ("too many clients": HTTP 500s) under load.
            "CONN_MAX_AGE": 0,  # required with the pool, which keeps the connections
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 10, "timeout": 5}},
        }
    }

_t, _m, _p = (int(x) for x in os.environ.get("PEER_ARGON2", "3,65536,4").split(","))
PEER_ARGON2_TIME_COST, PEER_ARGON2_MEMORY_COST, PEER_ARGON2_PARALLELISM = _t, _m, _p
PASSWORD_HASHERS = ["peer.hashers.BenchArgon2PasswordHasher"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=5),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=14),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "RS256",
    "SIGNING_KEY": Path(os.environ["PEER_PRIVATE_KEY_FILE"]).read_text(),
    "VERIFYING_KEY": Path(os.environ["PEER_PUBLIC_KEY_FILE"]).read_text(),
    "AUDIENCE": "authsvc",
    "ISSUER": "http://127.0.0.1:8000",
}

# Server errors (500) to stderr, which the runner keeps in the server's log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
