"""Django's argon2id hasher with authsvc's parameters (the runner passes them in)."""

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher


class BenchArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = settings.PEER_ARGON2_TIME_COST
    memory_cost = settings.PEER_ARGON2_MEMORY_COST
    parallelism = settings.PEER_ARGON2_PARALLELISM
