"""Migrate the peer's tables and create the benchmark user: python -m peer.seed USER PASSWORD."""

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer.settings")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0, interactive=False)
User = get_user_model()
username, password = sys.argv[1], sys.argv[2]
user, _ = User.objects.get_or_create(username=username)
user.set_password(password)
user.is_active = True
user.save()
print(user.password.split("$")[0:3])
