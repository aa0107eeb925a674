"""A widely used Python OAuth client (Authlib's requests OAuth2Session) against the real
ma-idp: discovery, authorization code + PKCE (S256) through the real pages, token exchange,
ID token, userinfo, refresh, revocation."""

from __future__ import annotations

import base64
import hashlib

import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from idp_harness import SCOPES, query, sign_in_and_consent
from ma_idp_validator import Validator


@pytest.fixture(scope="module")
def metadata(idp):
    issuer = idp.issuer("home")
    oidc = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
    assert oidc.status_code == 200, oidc.text
    meta = oidc.json()
    assert meta["issuer"] == issuer
    rfc8414 = requests.get(f"{idp.base}/.well-known/oauth-authorization-server/t/home", timeout=10)
    assert rfc8414.status_code == 200
    assert rfc8414.json()["issuer"] == issuer
    assert "S256" in meta["code_challenge_methods_supported"]
    return meta


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_authlib_code_pkce_refresh(idp, metadata, auth_method):
    c = idp.clients["home"]
    issuer = idp.issuer("home")
    session = OAuth2Session(
        client_id=c.client_id,
        client_secret=c.client_secret,
        scope=" ".join(SCOPES),
        redirect_uri=c.redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method=auth_method,
    )
    verifier = generate_token(64)
    nonce = generate_token(20)
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    assert "code_challenge=" in url and "code_challenge_method=S256" in url

    location = sign_in_and_consent(url)
    assert location.startswith(c.redirect_uri + "?"), location
    q = query(location)
    assert q["state"] == state
    assert q["iss"] == issuer, "RFC 9207 iss in the authorization response"

    token = session.fetch_token(
        metadata["token_endpoint"], authorization_response=location, code_verifier=verifier, state=state
    )
    assert token["token_type"].lower() == "bearer"
    assert isinstance(token["expires_in"], int) and token["expires_in"] >= 360
    assert token.get("refresh_token")
    assert set(token["scope"].split()) == set(SCOPES), token["scope"]

    v = Validator(issuer)
    claims = v.validate(token["access_token"])
    assert claims["client_id"] == c.client_id
    assert len(token["access_token"]) < 2048

    # The ID token, checked as a strict OIDC relying party would.
    id_token = token["id_token"]
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256", header
    key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(id_token)
    idc = jwt.decode(
        id_token,
        key.key,
        algorithms=["RS256"],
        audience=c.client_id,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    assert idc["nonce"] == nonce
    assert idc["sub"] == claims["sub"]
    digest = hashlib.sha256(token["access_token"].encode()).digest()
    assert idc["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()

    # Userinfo with the bearer token (Authlib adds the header).
    r = session.get(metadata["userinfo_endpoint"])
    assert r.status_code == 200, r.text
    assert r.json()["sub"] == claims["sub"]

    # Refresh: a new refresh token and an integer expires_in; the new access token validates.
    old_refresh = token["refresh_token"]
    new = session.refresh_token(metadata["token_endpoint"])
    assert new.get("refresh_token") and new["refresh_token"] != old_refresh
    assert isinstance(new["expires_in"], int) and new["expires_in"] >= 360
    assert new["access_token"] != token["access_token"]
    new_claims = v.validate(new["access_token"])
    assert new_claims["sub"] == claims["sub"]
    assert "music.control" in new_claims["scope"].split()

    # Revocation (RFC 7009) ends the grant: the refresh token no longer works.
    r = session.revoke_token(
        metadata["revocation_endpoint"], token=new["refresh_token"], token_type_hint="refresh_token"
    )
    assert r.status_code == 200, r.text
    with pytest.raises(OAuthError) as e:
        session.refresh_token(metadata["token_endpoint"], refresh_token=new["refresh_token"])
    assert e.value.error == "invalid_grant"


def test_authlib_wrong_secret_is_invalid_client(idp, metadata):
    c = idp.clients["home"]
    session = OAuth2Session(
        client_id=c.client_id, client_secret="not-the-secret", redirect_uri=c.redirect_uri,
        scope="music.control", code_challenge_method="S256",
    )
    verifier = generate_token(64)
    url, state = session.create_authorization_url(metadata["authorization_endpoint"], code_verifier=verifier)
    location = sign_in_and_consent(url)
    with pytest.raises(OAuthError) as e:
        session.fetch_token(
            metadata["token_endpoint"], authorization_response=location, code_verifier=verifier, state=state
        )
    assert e.value.error == "invalid_client"
