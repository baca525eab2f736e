"""What the app holds for its lifetime, built once in create_app and read by dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field

from authsvc.clock import Clock
from authsvc.config import Settings
from authsvc.observability.metrics import Metrics
from authsvc.services.auth import AuthService
from authsvc.services.clients import ClientService
from authsvc.services.keys import KeyService
from authsvc.services.oauth import OAuthService
from authsvc.services.sessions import SessionService
from authsvc.services.users import UserService
from authsvc.store.db import Database


@dataclass
class AppState:
    settings: Settings
    clock: Clock
    database: Database
    keys: KeyService
    auth: AuthService
    users: UserService
    clients: ClientService
    oauth: OAuthService
    sessions: SessionService
    metrics: Metrics = field(default_factory=Metrics)
