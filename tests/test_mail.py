"""The mail transport and outbox: SMTP URLs, credentials, and delivery to a real SMTP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from authsvc.config import Settings
from authsvc.mail.outbox import Outbox
from authsvc.mail.templates import render
from authsvc.mail.transport import SMTPConfig, transport_for
from tests.mailbox import smtp_server

pytestmark = pytest.mark.anyio


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "host", "port", "use_tls", "start_tls"),
    [
        ("smtp://mail.example.org", "mail.example.org", 25, False, None),
        ("smtp://mail.example.org:587?starttls=true", "mail.example.org", 587, False, True),
        ("smtp://127.0.0.1:25?starttls=false", "127.0.0.1", 25, False, False),
        ("smtps://mail.example.org", "mail.example.org", 465, True, False),
        ("smtps://mail.example.org:2465", "mail.example.org", 2465, True, False),
    ],
)
def test_smtp_urls(
    tmp_path: Path, url: str, host: str, port: int, use_tls: bool, start_tls: bool | None
) -> None:
    config = SMTPConfig.from_settings(_settings(tmp_path, smtp_url=url))
    assert (config.host, config.port, config.use_tls, config.start_tls) == (
        host,
        port,
        use_tls,
        start_tls,
    )
    assert (config.username, config.password) == (None, None)


def test_credentials_come_from_the_url_or_their_settings(tmp_path: Path) -> None:
    in_url = SMTPConfig.from_settings(
        _settings(tmp_path, smtp_url="smtp://me%40example.org:p%3Ass@mail.example.org:587")
    )
    assert (in_url.username, in_url.password) == ("me@example.org", "p:ss")
    separate = SMTPConfig.from_settings(
        _settings(
            tmp_path,
            smtp_url="smtps://mail.example.org",
            smtp_username="me",
            smtp_password="secret",
        )
    )
    assert (separate.username, separate.password) == ("me", "secret")


def test_no_transport_in_production_without_smtp(tmp_path: Path) -> None:
    production = _settings(
        tmp_path,
        env="production",
        key_encryption_key="mHPPqSoT3QCCd3W8mw0Zt1-vXhP_K-yEq2xXUo0nqt0=",
        database_url="postgresql://db.internal/authsvc",
        issuer="https://auth.example.org",
    )
    assert transport_for(production) is None
    assert transport_for(_settings(tmp_path)) is not None  # development: the log


# aiosmtpd warns about AUTH without TLS (this test server has none) and about its own
# deprecated session attribute, which its AUTH code reads itself.
@pytest.mark.filterwarnings("ignore::UserWarning:aiosmtpd.smtp")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:aiosmtpd.smtp")
async def test_the_outbox_logs_in_with_the_configured_credentials(tmp_path: Path) -> None:
    async with smtp_server(credentials=("mailer", "s3cret")) as box:
        for password, delivered in (("wrong", 0), ("s3cret", 1)):
            settings = _settings(
                tmp_path,
                smtp_url=f"smtp://mailer:{password}@127.0.0.1:{box.port}",
                mail_max_attempts=1,
                smtp_timeout_seconds=1,
            )
            outbox = Outbox(settings, transport_for(settings))
            outbox.start()
            assert outbox.enqueue(render("signup_exists", "a@example.org", username="a", site="x"))
            await outbox.join()
            await outbox.stop()
            assert (len(box.received), outbox.failed) == (delivered, 1 - delivered)


async def test_a_full_outbox_drops_rather_than_waits(tmp_path: Path) -> None:
    settings = _settings(tmp_path, smtp_url="smtp://127.0.0.1:9", mail_queue_size=2)
    outbox = Outbox(settings, transport_for(settings))  # not started: nothing leaves
    mail = render("signup_exists", "a@example.org", username="a", site="x")
    assert [outbox.enqueue(mail) for _ in range(3)] == [True, True, False]
