"""The mail transport and outbox: SMTP URLs, credentials, TLS (smtps and STARTTLS, with the
relay's certificate verified), and delivery to a real SMTP server."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest

from authsvc.config import ConfigError, Settings, load_settings
from authsvc.mail.outbox import Outbox
from authsvc.mail.templates import render
from authsvc.mail.transport import SMTPConfig, transport_for
from tests.conftest import Harness
from tests.mailbox import Mailbox, ServerCertificate, smtp_server

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
        address = f"127.0.0.1:{box.port}"
        attempts: list[tuple[dict[str, object], int]] = [
            ({"smtp_url": f"smtp://mailer:wrong@{address}"}, 0),
            ({"smtp_url": f"smtp://mailer:s3cret@{address}"}, 1),
            # The same credentials in their own settings, the URL without them.
            (
                {
                    "smtp_url": f"smtp://{address}",
                    "smtp_username": "mailer",
                    "smtp_password": "s3cret",
                },
                2,
            ),
        ]
        for values, delivered in attempts:
            settings = _settings(tmp_path, mail_max_attempts=1, smtp_timeout_seconds=1, **values)
            outbox = Outbox(settings, transport_for(settings))
            outbox.start()
            assert outbox.enqueue(render("signup_exists", "a@example.org", username="a", site="x"))
            await outbox.join()
            await outbox.stop()
            assert len(box.received) == delivered
            assert outbox.failed == (1 if delivered == 0 else 0)


async def test_a_full_outbox_drops_rather_than_waits(tmp_path: Path) -> None:
    settings = _settings(tmp_path, smtp_url="smtp://127.0.0.1:9", mail_queue_size=2)
    outbox = Outbox(settings, transport_for(settings))  # not started: nothing leaves
    mail = render("signup_exists", "a@example.org", username="a", site="x")
    assert [outbox.enqueue(mail) for _ in range(3)] == [True, True, False]


# -- TLS ------------------------------------------------------------------------------------------

TLS_MODES: list[Literal["smtps", "starttls"]] = ["smtps", "starttls"]


def _tls_url(box: Mailbox, mode: str) -> str:
    return box.url + ("?starttls=true" if mode == "starttls" else "")


async def _deliver(settings: Settings) -> Outbox:
    """One mail through a fresh outbox, tried once."""
    outbox = Outbox(settings, transport_for(settings))
    outbox.start()
    assert outbox.enqueue(render("signup_exists", "a@example.org", username="a", site="x"))
    await outbox.join()
    await outbox.stop()
    return outbox


@pytest.fixture
def certificate(tmp_path: Path) -> ServerCertificate:
    return ServerCertificate.make(tmp_path)


@pytest.mark.parametrize("mode", TLS_MODES)
async def test_mail_goes_over_tls_to_a_relay_signed_by_the_configured_ca(
    tmp_path: Path, certificate: ServerCertificate, mode: Literal["smtps", "starttls"]
) -> None:
    async with smtp_server(tls=mode, certificate=certificate) as box:
        settings = _settings(
            tmp_path,
            smtp_url=_tls_url(box, mode),
            smtp_ca_file=certificate.ca_file,
            mail_max_attempts=1,
            smtp_timeout_seconds=2,
        )
        outbox = await _deliver(settings)
    assert (outbox.sent, outbox.failed) == (1, 0)
    assert [m.to for m in box.received] == [["a@example.org"]]


@pytest.mark.parametrize("mode", TLS_MODES)
async def test_a_relay_certificate_from_an_untrusted_ca_fails_delivery(
    tmp_path: Path,
    certificate: ServerCertificate,
    mode: Literal["smtps", "starttls"],
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = ServerCertificate.make(tmp_path, "other")
    caplog.set_level(logging.ERROR, logger="authsvc.mail")
    async with smtp_server(tls=mode, certificate=certificate) as box:
        # Neither the system's CAs nor another CA vouch for this relay.
        for ca_file in (None, other.ca_file):
            settings = _settings(
                tmp_path,
                smtp_url=_tls_url(box, mode),
                smtp_ca_file=ca_file,
                mail_max_attempts=1,
                smtp_timeout_seconds=2,
            )
            outbox = await _deliver(settings)
            assert (outbox.sent, outbox.failed) == (0, 1)
    assert box.received == []
    logged = [r.getMessage() for r in caplog.records if r.name == "authsvc.mail"]
    assert len(logged) == 2 and all("TLS certificate not trusted" in m for m in logged), logged


async def test_ssl_cert_file_replaces_the_system_cas(
    tmp_path: Path, certificate: ServerCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.ca_file))
    async with smtp_server(tls="smtps", certificate=certificate) as box:
        settings = _settings(tmp_path, smtp_url=box.url, mail_max_attempts=1)
        outbox = await _deliver(settings)
    assert (outbox.sent, len(box.received)) == (1, 1)


def test_the_relay_certificate_and_its_host_name_are_always_checked(
    tmp_path: Path, certificate: ServerCertificate
) -> None:
    for ca_file in (None, certificate.ca_file):
        settings = _settings(tmp_path, smtp_url="smtp://mail.example.org", smtp_ca_file=ca_file)
        context = SMTPConfig.from_settings(settings).tls_context
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_a_missing_ca_file_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_SMTP_CA_FILE"):
        load_settings(smtp_ca_file=tmp_path / "nowhere.pem")


@pytest.fixture
async def untrusted_relay(certificate: ServerCertificate) -> AsyncIterator[Mailbox]:
    async with smtp_server(tls="starttls", certificate=certificate) as box:
        yield box


@pytest.fixture
def settings_overrides(untrusted_relay: Mailbox) -> dict[str, Any]:
    return {
        "signup_enabled": True,
        "smtp_url": _tls_url(untrusted_relay, "starttls"),
        "mail_max_attempts": 2,
        "mail_retry_base_seconds": 0.01,
        "smtp_timeout_seconds": 2,
    }


async def test_an_untrusted_relay_fails_the_mail_not_the_request(
    harness: Harness, untrusted_relay: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.mail")
    response = await harness.client.post(
        "/auth/signup",
        json={"username": "tess", "email": "tess@example.org", "password": "a long passphrase"},
    )
    assert response.status_code == 202, response.text
    outbox = harness.state.outbox
    for _ in range(3000):  # up to 30 s on a busy machine
        if outbox.failed:
            break
        await asyncio.sleep(0.01)
    assert (outbox.sent, outbox.failed) == (0, 1)
    assert untrusted_relay.received == []
    logged = [r.getMessage() for r in caplog.records if r.name == "authsvc.mail"]
    assert any("retry 1" in m for m in logged), logged
    assert any("not sent after 2 attempts" in m for m in logged), logged
    assert all("TLS certificate not trusted" in m for m in logged), logged
