"""The desk's agent tokens (worker/desk.py): what a token's claims must be."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from worker.desk import AuthError, mint_token, parse_claims, verify_token

SECRET = "s" * 32


def claims(**kw: Any) -> dict[str, Any]:
    return {"sub": "alice", "name": "Alice", "stores": ["main"], "exp": 2_000_000_000, **kw}


def test_good_claims() -> None:
    a = parse_claims(claims(stores=["main", "downtown", "main"]))
    assert (a.id, a.name, a.stores, a.exp) == (
        "alice",
        "Alice",
        ("main", "downtown"),
        2_000_000_000,
    )
    assert parse_claims({k: v for k, v in claims().items() if k != "name"}).name == "alice"


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"sub": "Alice"}, "sub"),
        ({"sub": "a" * 65}, "sub"),
        ({"sub": ""}, "sub"),
        ({"sub": 7}, "sub"),
        ({"name": ""}, "name"),
        ({"stores": []}, "stores"),
        ({"stores": "main"}, "stores"),
        ({"stores": ["main", "no/such"]}, "stores"),
        ({"stores": None}, "stores"),
        ({"exp": "soon"}, "exp"),
    ],
)
def test_bad_claims_name_the_claim(bad: dict[str, Any], says: str) -> None:
    with pytest.raises(AuthError) as e:
        parse_claims(claims(**bad))
    assert f"claim {says}" in str(e.value) and "\n" not in str(e.value)


def test_verify() -> None:
    tok = mint_token(SECRET, "bob", ["main"], name="Bob", ttl_s=60)
    a = verify_token(tok, SECRET)
    assert a.id == "bob" and a.name == "Bob" and 50 < a.exp - time.time() <= 60
    for token, secret, says in [
        (tok, "x" * 32, "signature"),
        (mint_token(SECRET, "bob", ["main"], ttl_s=-10), SECRET, "expired"),
        (jwt.encode({"sub": "bob", "stores": ["main"]}, SECRET, algorithm="HS256"), SECRET, "exp"),
        (jwt.encode(claims(), None, algorithm="none"), SECRET, "invalid token"),
        (jwt.encode(claims(), "k" * 64, algorithm="HS512"), "k" * 64, "invalid token"),
        ("not.a.token", SECRET, "invalid token"),
    ]:
        with pytest.raises(AuthError) as e:
            verify_token(token, secret)
        assert says in str(e.value) and "\n" not in str(e.value), (says, str(e.value))


def test_mint_refuses_what_the_desk_would_refuse() -> None:
    with pytest.raises(AuthError):
        mint_token(SECRET, "Not Valid", ["main"])
