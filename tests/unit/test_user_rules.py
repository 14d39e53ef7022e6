"""Registration rules (pure domain, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.users import EmailAddress, User, check_display_name, check_email


@given(st.from_regex(r"[a-z0-9._]{1,20}@[a-z0-9]{1,10}\.(org|com|de)", fullmatch=True), st.sampled_from(["", " ", "  "]))
def test_email_is_normalised_and_claim_id_ignores_case(email: str, pad: str) -> None:
    assert check_email(pad + email.upper() + pad) == email
    assert EmailAddress.create_id(email.upper()) == EmailAddress.create_id(email)


@pytest.mark.parametrize("bad", ["", "no-at-sign", "a@b", "a b@c.org", "@example.org", "x" * 250 + "@e.org"])
def test_bad_emails_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput) as e:
        check_email(bad)
    assert e.value.code == "INVALID_INPUT" and e.value.details["field"] == "email"


@given(st.text(min_size=1, max_size=60).filter(lambda s: s.strip()))
def test_display_names_are_trimmed_and_collapsed(name: str) -> None:
    out = check_display_name(name)
    assert out == " ".join(name.split()) and "  " not in out


def test_blank_or_long_display_names_are_refused() -> None:
    for bad in ("", "   ", "x" * 81):
        with pytest.raises(InvalidInput):
            check_display_name(bad)


def test_register_records_one_event_and_rename_another() -> None:
    user = User.register("Ada@Example.org", "Ada", "Europe/Paris")
    user.change_display_name("  Countess  of Lovelace ")
    events = user.collect_events()
    assert [type(e).__qualname__ for e in events] == ["User.Registered", "User.DisplayNameChanged"]
    assert user.display_name == "Countess of Lovelace" and user.version == 2


def test_a_refused_rename_changes_nothing() -> None:
    user = User.register("a@example.org", "Ada")
    with pytest.raises(InvalidInput):
        user.change_display_name("   ")
    assert user.display_name == "Ada" and len(user.collect_events()) == 1
