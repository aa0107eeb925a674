"""The validator against keys it can sign with: a tiny JWKS server on 127.0.0.1 with our own
keys, for what the real server never issues (missing claims, other algorithms, odd
Cache-Control headers, an unreachable JWKS)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from idp_harness import b64url_json, unb64url
from ma_idp_validator import TokenRejected, Validator, _max_age

ISS = "https://idp.test/t/home"
KEYS = {
    "ec": ("ES256", ec.generate_private_key(ec.SECP256R1())),
    "rsa": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "ed": ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
}


def public_jwk(kid: str, with_alg: bool = True) -> dict:
    alg, priv = KEYS[kid]
    algo = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algo.to_jwk(priv.public_key()))
    jwk.update(kid=kid, use="sig")
    if with_alg:
        jwk["alg"] = alg
    return jwk


class Jwks:
    """Serves `self.body` with `self.cache_control`; counts requests; can be switched off."""

    def __init__(self) -> None:
        self.body: dict = {"keys": [public_jwk(k) for k in KEYS]}
        self.cache_control: str | None = "public, max-age=300"
        self.requests = 0
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests += 1
                if outer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                data = json.dumps(outer.body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                if outer.cache_control is not None:
                    self.send_header("Cache-Control", outer.cache_control)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks():
    j = Jwks()
    yield j
    j.close()


def claims(**over) -> dict:
    now = int(time.time())
    c = {"iss": ISS, "sub": "u1", "aud": "music-assistant", "client_id": "alexa", "scope": "music.control",
         "exp": now + 3600, "iat": now, "jti": "j1"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(kid: str = "ec", typ: str | None = "at+jwt", **over) -> str:
    alg, priv = KEYS[kid]
    headers = {"kid": kid}
    if typ is not None:
        headers["typ"] = typ
    token = jwt.encode(claims(**over), priv, algorithm=alg, headers=headers)
    if typ is None:  # PyJWT adds typ JWT by default; drop it entirely
        h, c, s = token.split(".")
        hd = json.loads(unb64url(h))
        hd.pop("typ", None)
        token = f"{b64url_json(hd)}.{c}.{s}"
    return token


def validator(jwks: Jwks, **kw) -> Validator:
    return Validator(ISS, jwks_uri=jwks.uri, **kw)


def test_all_three_algorithms_and_aud_list(jwks):
    v = validator(jwks)
    for kid in KEYS:
        assert v.validate(sign(kid))["sub"] == "u1"
    assert v.validate(sign(aud=["other", "music-assistant"]))["sub"] == "u1"
    assert v.validate(sign(typ="application/at+jwt"))["sub"] == "u1"
    assert jwks.requests == 1
    only_ec = validator(jwks, algorithms=["ES256"])
    with pytest.raises(TokenRejected) as e:
        only_ec.validate(sign("rsa"))
    assert e.value.code == "algorithm_not_allowed"


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub", "client_id"])
def test_required_claims(jwks, claim):
    with pytest.raises(TokenRejected) as e:
        validator(jwks).validate(sign(**{claim: None}))
    assert e.value.code == "missing_claim" and claim in e.value.reason, repr(e.value)


def test_nbf_and_bad_time_types(jwks):
    v = validator(jwks)
    with pytest.raises(TokenRejected) as e:
        v.validate(sign(nbf=int(time.time()) + 120))
    assert e.value.code == "not_yet_valid" and "nbf" in e.value.reason
    assert v.validate(sign(nbf=int(time.time()) + 10))  # within the leeway
    with pytest.raises(TokenRejected):
        v.validate(sign(exp="tomorrow"))
    with pytest.raises(TokenRejected):
        v.validate(sign(client_id=42))


def test_missing_typ(jwks):
    with pytest.raises(TokenRejected) as e:
        validator(jwks).validate(sign(typ=None))
    assert e.value.code == "wrong_type"


def test_key_without_alg_is_never_used(jwks):
    jwks.body = {"keys": [public_jwk("ec", with_alg=False), public_jwk("rsa")]}
    v = validator(jwks)
    assert v.validate(sign("rsa"))["sub"] == "u1"
    with pytest.raises(TokenRejected) as e:
        v.validate(sign("ec"))
    assert e.value.code == "unknown_key"
    jwks.body = {"keys": [public_jwk("ec", with_alg=False)]}
    with pytest.raises(TokenRejected) as e:
        validator(jwks).validate(sign("ec"))
    assert e.value.code == "jwks_unavailable" and "no usable signing key" in e.value.reason


def test_cache_control(jwks):
    assert _max_age("public, max-age=300") == 300
    assert _max_age('max-age="60", must-revalidate') == 60
    assert _max_age("no-store") == 0 and _max_age("no-cache, max-age=60") == 0
    assert _max_age("public") is None and _max_age(None) is None

    v = validator(jwks, min_refetch_interval=1)
    v.validate(sign())
    assert v.jwks.jwk_set_cache.lifespan == 300

    jwks.cache_control = None
    v = validator(jwks, default_cache=123)
    v.validate(sign())
    assert v.jwks.jwk_set_cache.lifespan == 123

    jwks.cache_control = "max-age=99999999"
    v = validator(jwks, max_cache=3600)
    v.validate(sign())
    assert v.jwks.jwk_set_cache.lifespan == 3600

    # no-store still caches for min_refetch_interval: one fetch per interval at most.
    jwks.cache_control = "no-store"
    v = validator(jwks, min_refetch_interval=1)
    jwks.requests = 0
    for _ in range(20):
        v.validate(sign())
    assert jwks.requests == 1 and v.jwks.jwk_set_cache.lifespan == 1
    time.sleep(1.1)
    v.validate(sign())
    assert jwks.requests == 2


def test_jwks_outage(jwks):
    jwks.down = True
    with pytest.raises(TokenRejected) as e:
        validator(jwks).validate(sign())
    assert e.value.code == "jwks_unavailable" and "503" in e.value.reason

    jwks.down = False
    jwks.cache_control = "max-age=1"
    v = validator(jwks, min_refetch_interval=1)
    v.validate(sign())
    jwks.down = True
    time.sleep(1.1)  # the cache has expired and the JWKS is down: the last good keys serve
    assert v.validate(sign())["sub"] == "u1"
    assert v.validate(sign("rsa"))["sub"] == "u1"
    # An unknown kid during the outage: a clear rejection, no crash.
    jwks.body = {"keys": []}
    with pytest.raises(TokenRejected) as e:
        v.validate(jwt.encode(claims(), KEYS["ec"][1], algorithm="ES256", headers={"kid": "new", "typ": "at+jwt"}))
    assert e.value.code == "unknown_key", repr(e.value)
