"""Key rotation while the server runs: a validator created before `ma-idp keys rotate` keeps
accepting old tokens and picks up the new signing key without being recreated."""

from __future__ import annotations

import time

import jwt
import requests

from idp_harness import code_flow_tokens
from ma_idp_validator import Validator


def published_kids(idp) -> set[str]:
    return {k["kid"] for k in requests.get(f"{idp.issuer('home')}/jwks.json", timeout=10).json()["keys"]}


def test_validator_follows_key_rotation(idp):
    v = Validator(idp.issuer("home"), min_refetch_interval=2)
    before = code_flow_tokens(idp, "home")
    old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
    v.validate(before["access_token"])
    fetches = v.jwks.fetch_count
    kids_before = published_kids(idp)

    # Twice: the key that signs after one rotation was already published before it, so only
    # a second rotation forces a refetch on an unknown kid.
    # Forced, as after a key is compromised: without --force a rotation waits until the next
    # keys have been published longer than the JWKS may be cached.
    first = idp.cli("keys", "rotate", "--tenant", "home", "--force")
    second = idp.cli("keys", "rotate", "--tenant", "home", "--force")
    assert first["active_kids"] != second["active_kids"]
    time.sleep(6)  # the server caches keys for up to 5 s

    c = idp.clients["home"]
    r = requests.post(
        f"{idp.issuer('home')}/token",
        data={"grant_type": "refresh_token", "refresh_token": before["refresh_token"]},
        auth=(c.client_id, c.client_secret),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    after = r.json()
    new_kid = jwt.get_unverified_header(after["access_token"])["kid"]
    assert new_kid != old_kid
    assert new_kid in second["active_kids"], (new_kid, second)
    assert new_kid not in kids_before, "the new key was not yet in the JWKS the validator cached"

    assert v.validate(after["access_token"])["client_id"] == c.client_id, "new key found without a restart"
    assert v.jwks.fetch_count == fetches + 1, "exactly one refetch, triggered by the unknown kid"
    assert v.validate(before["access_token"])["client_id"] == c.client_id, "old key still accepted"
    assert old_kid in published_kids(idp)
    # Fresh tokens after the rotation validate too, from the cache.
    fresh = code_flow_tokens(idp, "home")
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == new_kid
    v.validate(fresh["access_token"])
    assert v.jwks.fetch_count == fetches + 1
