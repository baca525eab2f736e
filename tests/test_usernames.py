"""Username normalisation (RFC 8265 section 3.3, UsernameCaseMapped), as properties."""

from __future__ import annotations

import string
import unicodedata
from typing import Literal

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from authsvc.errors import InvalidUsername, UserExists
from authsvc.services.users import USERNAME_MAX, normalize_username
from tests.conftest import Harness

ASCII_NAME = st.text(string.ascii_letters + string.digits + "._-@", min_size=1, max_size=40)


def fullwidth(text: str) -> str:
    """ASCII ! .. ~ to their fullwidth forms (U+FF01 .. U+FF5E)."""
    return "".join(chr(ord(c) - 0x21 + 0xFF01) if "!" <= c <= "~" else c for c in text)


def normalized_or_none(raw: str) -> str | None:
    try:
        return normalize_username(raw)
    except InvalidUsername:
        return None


# Mostly name-like text (letters, digits, marks, printable ASCII), so few examples are refused.
NAME_LIKE = st.text(
    alphabet=st.characters(categories=("Ll", "Lu", "Lt", "Lo", "Lm", "Nd", "Mn", "Mc"))
    | st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    min_size=1,
    max_size=40,
)


@given(NAME_LIKE)
@settings(suppress_health_check=[HealthCheck.filter_too_much])
@example("ß")
@example("ΐ")
@example("ǰ")
@example("ﬀ")
@example("Å")  # ANGSTROM SIGN
def test_normalisation_is_idempotent(raw: str) -> None:
    """RFC 8264 section 7: applying the rules again changes nothing (else the name is refused)."""
    name = normalized_or_none(raw)
    assume(name is not None)
    assert name is not None
    assert normalize_username(name) == name
    assert unicodedata.is_normalized("NFC", name)
    assert name == name.casefold() or normalize_username(name.casefold()) == name


@given(ASCII_NAME)
def test_case_and_width_variants_collide(name: str) -> None:
    expected = normalize_username(name)
    for variant in (name.upper(), name.lower(), name.swapcase(), fullwidth(name)):
        assert normalize_username(variant) == expected
    assert normalize_username(fullwidth(name.upper())) == expected


@given(st.sampled_from(["é", "Å", "ñ", "ö"]), ASCII_NAME)
def test_composed_and_decomposed_forms_collide(letter: str, name: str) -> None:
    composed = name + letter
    decomposed = name + unicodedata.normalize("NFD", letter)
    assert normalize_username(composed) == normalize_username(decomposed)
    assert normalize_username(composed.upper()) == normalize_username(decomposed)


Category = Literal["Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cs", "Sm", "So", "Sk"]
FORBIDDEN_CATEGORIES: tuple[Category, ...] = (
    "Zs",
    "Zl",
    "Zp",
    "Cc",
    "Cf",
    "Co",
    "Cs",
    "Sm",
    "So",
    "Sk",
)


@given(
    ASCII_NAME,
    st.characters(categories=FORBIDDEN_CATEGORIES).filter(lambda c: ord(c) > 0x7E or ord(c) < 0x21),
    st.integers(min_value=0, max_value=40),
)
def test_spaces_controls_symbols_and_invisibles_are_refused(
    name: str, bad: str, where: int
) -> None:
    # Width mapping may turn a fullwidth symbol into printable ASCII, which is allowed.
    assume(not unicodedata.decomposition(bad).startswith(("<wide>", "<narrow>")))
    position = min(where, len(name))
    with pytest.raises(InvalidUsername):
        normalize_username(name[:position] + bad + name[position:])


@pytest.mark.parametrize(
    "raw",
    ["", " ", "alice bob", "alice\u200b", "\u202eecila", "a\tb", "x" * (USERNAME_MAX + 1), "☃"],
)
def test_invalid_names_are_refused(raw: str) -> None:
    with pytest.raises(InvalidUsername):
        normalize_username(raw)


@pytest.mark.anyio
async def test_look_alike_duplicates_cannot_be_created(harness: Harness) -> None:
    await harness.create_user("Alice")
    for look_alike in ("alice", "ALICE", "\uff21\uff4c\uff49\uff43\uff45", fullwidth("alice")):
        with pytest.raises(UserExists):
            await harness.create_user(look_alike)
    # ... and every spelling logs in as the one user.
    for spelling in ("alice", fullwidth("ALICE")):
        assert (await harness.login(spelling))["access_token"]
