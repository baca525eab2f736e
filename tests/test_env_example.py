"""Every setting is documented in .env.example (the project rule), with a parseable default."""

from __future__ import annotations

from pathlib import Path

from authsvc.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def test_every_setting_is_in_env_example() -> None:
    names = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    expected = {"AUTHSVC_" + field.upper() for field in Settings.model_fields}
    assert sorted(expected - names) == []
