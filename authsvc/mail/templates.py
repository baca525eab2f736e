"""The mails authsvc sends, each as a text and an HTML part from a string.Template.

Values are substituted as given into the text part and HTML-escaped into the HTML part (a
username is user input). Templates use only `$name` placeholders; `safe_substitute` is not used,
so a missing value is a bug that fails loudly in tests rather than a mail with `$link` in it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from string import Template


@dataclass(frozen=True)
class Mail:
    """One message to one recipient; `kind` names the template (logs, metrics, tests)."""

    kind: str
    to: str
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class _Template:
    subject: str
    text: Template
    html: Template


_FOOTER_TEXT = "\n-- \nThis mail was sent by the sign-in service of $site.\n"
_FOOTER_HTML = '<p style="color:#666">This mail was sent by the sign-in service of $site.</p>'

TEMPLATES: dict[str, _Template] = {
    "verify_email": _Template(
        "Confirm your email address",
        Template(
            "Hello $username,\n\n"
            "please confirm your email address by opening this link:\n\n$link\n\n"
            "The link works once and expires in $hours hours. If you did not sign up, "
            "ignore this mail: the account stays off." + _FOOTER_TEXT
        ),
        Template(
            "<p>Hello $username,</p>"
            '<p>please confirm your email address: <a href="$link">confirm</a>.</p>'
            "<p>The link works once and expires in $hours hours. If you did not sign up, "
            "ignore this mail: the account stays off.</p>" + _FOOTER_HTML
        ),
    ),
    "signup_exists": _Template(
        "Someone tried to sign up with your address",
        Template(
            "Hello $username,\n\n"
            "someone tried to create a new account with this email address, which already "
            "belongs to your account. If it was you, log in instead, or reset your password "
            "if you forgot it. If it was not you, you need not do anything." + _FOOTER_TEXT
        ),
        Template(
            "<p>Hello $username,</p>"
            "<p>someone tried to create a new account with this email address, which already "
            "belongs to your account. If it was you, log in instead, or reset your password "
            "if you forgot it. If it was not you, you need not do anything.</p>" + _FOOTER_HTML
        ),
    ),
    "username_taken": _Template(
        "Your sign-up did not go through",
        Template(
            "Hello,\n\n"
            "someone (you, we hope) tried to sign up with this email address and the username "
            '"$username", which is already taken. Please sign up again with another '
            "username." + _FOOTER_TEXT
        ),
        Template(
            "<p>Hello,</p>"
            "<p>someone (you, we hope) tried to sign up with this email address and the "
            "username &ldquo;$username&rdquo;, which is already taken. Please sign up again "
            "with another username.</p>" + _FOOTER_HTML
        ),
    ),
    "reset_password": _Template(
        "Reset your password",
        Template(
            "Hello $username,\n\n"
            "to choose a new password, open this link:\n\n$link\n\n"
            "The link works once and expires in $minutes minutes; using it logs you out "
            "everywhere. If you did not ask for this, ignore this mail: your password stays "
            "as it is." + _FOOTER_TEXT
        ),
        Template(
            "<p>Hello $username,</p>"
            '<p>to choose a new password, <a href="$link">open this link</a>.</p>'
            "<p>The link works once and expires in $minutes minutes; using it logs you out "
            "everywhere. If you did not ask for this, ignore this mail: your password stays "
            "as it is.</p>" + _FOOTER_HTML
        ),
    ),
}


def render(kind: str, to: str, **values: str) -> Mail:
    template = TEMPLATES[kind]
    escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
    return Mail(
        kind=kind,
        to=to,
        subject=template.subject,
        text=template.text.substitute(values),
        html="<!doctype html><html><body>" + template.html.substitute(escaped) + "</body></html>",
    )
