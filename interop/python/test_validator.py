"""The Python validator (clients/python/ma_idp_validator.py) against tokens the real ma-idp
issued: accepted when right, rejected with a clear reason when not."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from idp_harness import b64url, b64url_json, code_flow_tokens, unb64url
from ma_idp_validator import TokenRejected, Validator


@pytest.fixture(scope="module")
def home_tokens(idp):
    return code_flow_tokens(idp, "home", scope="openid music.control offline_access")


@pytest.fixture(scope="module")
def at(home_tokens):
    return home_tokens["access_token"]


def parts(token: str) -> tuple[dict, dict, str]:
    h, c, s = token.split(".")
    return json.loads(unb64url(h)), json.loads(unb64url(c)), s


def rejected(v: Validator, token: str, code: str, words: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as e:
        v.validate(token)
    assert e.value.code == code, repr(e.value)
    assert words in e.value.reason, repr(e.value)
    assert token not in str(e.value), "the reason must not echo the token"
    return e.value


def test_accepts_a_real_token(idp, at):
    v = Validator(idp.issuer("home"))
    claims = v.validate(at)
    assert claims["iss"] == idp.issuer("home")
    assert claims["aud"] in ("music-assistant", ["music-assistant"])
    assert claims["client_id"] == idp.clients["home"].client_id
    assert "music.control" in claims["scope"].split()
    assert isinstance(claims["sub"], str) and claims["sub"]
    header = jwt.get_unverified_header(at)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
    # Required scope: present / absent.
    assert Validator(idp.issuer("home"), required_scope="music.control").validate(at)["sub"] == claims["sub"]
    rejected(Validator(idp.issuer("home"), required_scope="music.admin"), at, "missing_scope", "music.admin")


def test_async_validation(idp, at):
    async def main():
        v = Validator(idp.issuer("home"))
        first = await v.validate_async(at)  # fetches the JWKS in a worker thread
        again = await asyncio.gather(*(v.validate_async(at) for _ in range(20)))  # from cache
        with pytest.raises(TokenRejected) as e:
            await v.validate_async(at[:-4] + ("AAAA" if not at.endswith("AAAA") else "BBBB"))
        return v, first, again, e.value

    v, first, again, err = asyncio.run(main())
    assert all(c == first for c in again)
    assert v.jwks.fetch_count == 1
    assert err.code == "bad_signature"


def test_honours_cache_control_max_age(idp, at):
    r = requests.get(f"{idp.issuer('home')}/jwks.json", timeout=10)
    assert "max-age=300" in r.headers.get("Cache-Control", ""), r.headers
    v = Validator(idp.issuer("home"), default_cache=42)
    v.validate(at)
    assert v.jwks.jwk_set_cache.lifespan == 300


def test_rejects_alg_none(idp, at):
    h, c, _ = parts(at)
    v = Validator(idp.issuer("home"))
    for alg in ("none", "None", "NONE"):
        forged = f"{b64url_json({**h, 'alg': alg})}.{b64url_json(c)}."
        rejected(v, forged, "algorithm_not_allowed", "is not allowed")


def test_rejects_hs256_signed_with_the_public_key(idp, at):
    h, c, _ = parts(at)
    jwks = requests.get(f"{idp.issuer('home')}/jwks.json", timeout=10).json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == h["kid"])
    pem = jwt.PyJWK(jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    v = Validator(idp.issuer("home"))
    for secret in (json.dumps(jwk).encode(), pem, json.dumps(jwks).encode()):
        signing_input = f"{b64url_json({**h, 'alg': 'HS256'})}.{b64url_json(c)}"
        sig = b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
        rejected(v, f"{signing_input}.{sig}", "algorithm_not_allowed", "'HS256' is not allowed")
    with pytest.raises(ValueError):
        Validator(idp.issuer("home"), algorithms=["HS256"])


def test_rejects_header_alg_that_differs_from_the_keys(idp, at):
    h, c, s = parts(at)
    v = Validator(idp.issuer("home"))
    forged = f"{b64url_json({**h, 'alg': 'RS256'})}.{b64url_json(c)}.{s}"
    rejected(v, forged, "algorithm_mismatch", "does not match its key")
    forged = f"{b64url_json({**h, 'alg': 'EdDSA'})}.{b64url_json(c)}.{s}"
    rejected(v, forged, "algorithm_mismatch", "does not match its key")


def test_rejects_wrong_typ_and_id_tokens(idp, at, home_tokens):
    h, c, s = parts(at)
    v = Validator(idp.issuer("home"))
    rejected(v, f"{b64url_json({**h, 'typ': 'JWT'})}.{b64url_json(c)}.{s}", "wrong_type", "at+jwt")
    no_typ = {k: val for k, val in h.items() if k != "typ"}
    rejected(v, f"{b64url_json(no_typ)}.{b64url_json(c)}.{s}", "wrong_type", "at+jwt")
    assert "id_token" in home_tokens, home_tokens.keys()
    rejected(v, home_tokens["id_token"], "wrong_type", "not an access token")


def test_rejects_malformed(idp):
    v = Validator(idp.issuer("home"))
    for junk in ("", "abc", "a.b.c", "a.b", "x" * 20000, "....", "eyJhbGciOiJFUzI1NiJ9..."):
        with pytest.raises(TokenRejected) as e:
            v.validate(junk)
        assert e.value.code in ("malformed", "wrong_type", "no_key_id"), repr(e.value)


def test_rejects_tampered_payload(idp, at):
    h_raw, c_raw, s = at.split(".")
    _, c, _ = parts(at)
    v = Validator(idp.issuer("home"))
    for change in ({"scope": c["scope"] + " music.admin"}, {"sub": "someone-else"}, {"exp": c["exp"] + 86400}):
        rejected(v, f"{h_raw}.{b64url_json({**c, **change})}.{s}", "bad_signature", "invalid signature")
    # A signature of the right length but wrong bytes.
    sig = bytearray(unb64url(s))
    sig[5] ^= 1
    rejected(v, f"{h_raw}.{c_raw}.{b64url(bytes(sig))}", "bad_signature", "invalid signature")


def test_rejects_unknown_kid_after_refetching(idp, at):
    h, _, s = parts(at)
    c_raw = at.split(".")[1]
    v = Validator(idp.issuer("home"), min_refetch_interval=0)
    v.validate(at)
    assert v.jwks.fetch_count == 1
    rejected(v, f"{b64url_json({**h, 'kid': 'no-such-key'})}.{c_raw}.{s}", "unknown_key", "even after refetching")
    assert v.jwks.fetch_count == 2, "an unknown kid causes one refetch"
    no_kid = {k: val for k, val in h.items() if k != "kid"}
    rejected(v, f"{b64url_json(no_kid)}.{c_raw}.{s}", "no_key_id", "no key id")


def test_unknown_kid_refetch_is_rate_limited(idp, at):
    h, _, s = parts(at)
    c_raw = at.split(".")[1]

    def unknown(kid: str) -> str:
        return f"{b64url_json({**h, 'kid': kid})}.{c_raw}.{s}"

    v = Validator(idp.issuer("home"), min_refetch_interval=2)
    v.validate(at)
    assert v.jwks.fetch_count == 1
    # Just fetched: an unknown kid is not refetched yet.
    rejected(v, unknown("k1"), "unknown_key", "not refetched yet")
    assert v.jwks.fetch_count == 1
    time.sleep(2.2)
    rejected(v, unknown("k2"), "unknown_key", "even after refetching")
    assert v.jwks.fetch_count == 2
    # A burst of made-up kids from many threads at once: no further fetch.
    errors: list[TokenRejected] = []

    def attempt(i: int) -> None:
        try:
            v.validate(unknown(f"burst-{i}"))
        except TokenRejected as e:
            errors.append(e)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 50 and all(e.code == "unknown_key" for e in errors)
    assert v.jwks.fetch_count == 2
    # After the interval, a burst causes exactly one fetch.
    time.sleep(2.2)
    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50, 80)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert v.jwks.fetch_count == 3
    # Known keys keep working throughout.
    assert v.validate(at)["sub"]


def test_rejects_wrong_issuer(idp, at):
    v = Validator(idp.issuer("elsewhere"), jwks_uri=f"{idp.issuer('home')}/jwks.json")
    rejected(v, at, "wrong_issuer", "wrong issuer")
    v = Validator(idp.issuer("home").replace("localhost", "127.0.0.1"), jwks_uri=f"{idp.issuer('home')}/jwks.json")
    rejected(v, at, "wrong_issuer", "wrong issuer")


def test_rejects_wrong_audience(idp, at):
    rejected(Validator(idp.issuer("home"), audience="someone-else"), at, "wrong_audience", "wrong audience")


def test_rejects_expired_with_clock_moved_forward(idp, at):
    _, c, _ = parts(at)
    assert c["exp"] - c["iat"] >= 360, "Alexa needs access tokens to live at least 360 s"
    # Within the leeway (30 s) it is still accepted; past it, it is expired.
    assert Validator(idp.issuer("home"), now=lambda: c["exp"] + 10).validate(at)
    rejected(Validator(idp.issuer("home"), now=lambda: c["exp"] + 31), at, "expired", "expired")
    rejected(Validator(idp.issuer("home"), now=lambda: time.time() + 7200), at, "expired", "expired")
    rejected(Validator(idp.issuer("home"), leeway=0, now=lambda: c["exp"]), at, "expired", "expired")


def test_rejects_not_yet_valid_with_clock_moved_backward(idp, at):
    _, c, _ = parts(at)
    assert Validator(idp.issuer("home"), now=lambda: c["iat"] - 10).validate(at)
    rejected(Validator(idp.issuer("home"), now=lambda: c["iat"] - 31), at, "not_yet_valid", "not yet valid")
    rejected(Validator(idp.issuer("home"), now=lambda: time.time() - 7200), at, "not_yet_valid", "not yet valid")


def test_rejects_a_token_of_another_tenant(idp):
    other = code_flow_tokens(idp, "other")["access_token"]
    assert Validator(idp.issuer("other")).validate(other)["iss"] == idp.issuer("other")
    v = Validator(idp.issuer("home"))
    with pytest.raises(TokenRejected) as e:
        v.validate(other)
    assert e.value.code in ("unknown_key", "wrong_issuer"), repr(e.value)
    # Even when the validator is pointed at the other tenant's keys, the issuer differs.
    v = Validator(idp.issuer("home"), jwks_uri=f"{idp.issuer('other')}/jwks.json")
    rejected(v, other, "wrong_issuer", "wrong issuer")
