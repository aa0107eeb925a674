"""Offline validation of ma-idp access tokens (RFC 9068 JWTs) for Music Assistant.

One small module, one dependency: PyJWT with its ``crypto`` extra (which Music Assistant
already has). Built on :class:`jwt.PyJWKClient`: a subclass keeps PyJWT's JWK-set cache
(``lifespan``) and key parsing (``PyJWKSet``/``PyJWK``, lookup by ``kid``), and overrides
``fetch_data`` (to read ``Cache-Control``) and ``get_signing_key`` (to rate-limit refetches
the same way on every PyJWT 2.x version; PyJWT's own ``cooldown_duration`` exists only in
recent releases and counts differently).

What it checks, in order (the first failure raises :class:`TokenRejected`):

* the token is a compact JWS of sane size with a parsable header;
* ``alg`` is on the allow-list (ES256, RS256, EdDSA by default; never ``none``, never HS*);
* ``typ`` is ``at+jwt`` (or ``application/at+jwt``), so an ID token is not accepted as an
  access token;
* ``kid`` is present and published in the issuer's JWKS; the key's own ``alg`` must be
  present and equal to the header's ``alg`` (the header's word alone is never trusted);
* the signature, then ``iss`` (exact) and ``aud`` (contains the configured audience);
* the claims ``exp``, ``iat``, ``iss``, ``aud``, ``sub``, ``client_id`` are present;
* ``exp``, ``nbf`` and ``iat`` against the clock with a small leeway (``now`` is injectable);
* optionally a required scope.

JWKS caching and key rotation:

* The JWKS is cached for the response's ``Cache-Control: max-age`` (ma-idp sends 300 s),
  clamped to ``[min_refetch_interval, max_cache]``; without a usable ``max-age`` it is
  cached for ``default_cache`` seconds. ``no-store``/``no-cache``/``max-age=0`` therefore
  still cache for ``min_refetch_interval``, so the JWKS endpoint is never hit more than
  once per ``min_refetch_interval`` seconds. This is done by setting the ``lifespan`` of
  PyJWKClient's own JWK-set cache after each fetch.
* A ``kid`` that the cached JWKS does not contain triggers one refetch, at most once per
  ``min_refetch_interval`` seconds (enforced here under a lock, whatever PyJWT version is
  installed: older PyJWKClient versions refetch on *every* unknown kid). A key published
  by a rotation is therefore found without a restart, and a flood of tokens with made-up
  kids cannot turn into a flood of JWKS requests.
* If a refetch fails (network error) the last good JWKS is still used for known kids.
* :meth:`Validator.validate_async` looks the key up in the cache without blocking and only
  hops to a worker thread (``asyncio.to_thread``) when the JWKS must be fetched.

Use::

    validator = Validator("https://idp.example/t/home", audience="music-assistant")
    claims = await validator.validate_async(token)   # or validator.validate(token)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

__all__ = ["TokenRejected", "Validator", "DEFAULT_ALGORITHMS"]

DEFAULT_ALGORITHMS = ("ES256", "RS256", "EdDSA")
# Symmetric algorithms can never be right for tokens checked against a public JWKS.
_NEVER = frozenset({"none", "HS256", "HS384", "HS512"})
_REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "client_id")
_MAX_TOKEN_BYTES = 16 * 1024


class TokenRejected(Exception):
    """The token is not acceptable. ``reason`` is a short human-readable sentence that is
    safe to log (it never contains the token); ``code`` is a stable machine-readable word
    (e.g. ``expired``, ``wrong_audience``, ``jwks_unavailable``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"TokenRejected({self.code!r}, {self.reason!r})"


def _max_age(cache_control: str | None) -> float | None:
    """``max-age`` from a Cache-Control header; ``no-store``/``no-cache`` mean 0."""
    if not cache_control:
        return None
    out = None
    for directive in cache_control.split(","):
        d = directive.strip().lower()
        if d in ("no-store", "no-cache"):
            return 0.0
        if d.startswith("max-age="):
            try:
                out = float(int(d[len("max-age=") :].strip('"')))
            except ValueError:
                out = None
    return out


class _JWKSClient(PyJWKClient):
    """PyJWKClient that honours Cache-Control max-age and rate-limits unknown-kid refetches."""

    def __init__(
        self,
        uri: str,
        *,
        min_refetch_interval: float,
        default_cache: float,
        max_cache: float,
        timeout: float,
        algorithms: tuple[str, ...],
    ) -> None:
        super().__init__(uri, cache_jwk_set=True, lifespan=default_cache, timeout=timeout)
        self.algorithms = algorithms
        self.min_refetch_interval = float(min_refetch_interval)
        self.default_cache = float(default_cache)
        self.max_cache = float(max_cache)
        self.fetch_count = 0  # successful fetches (for tests and metrics)
        self._lock = threading.Lock()
        self._last_fetch: float | None = None  # time.monotonic() of the last fetch attempt
        self._last_good: Any = None  # the last successfully fetched PyJWKSet

    def fetch_data(self) -> Any:
        """Fetch the JWKS (no redirects followed) and set the cache lifespan from its
        Cache-Control max-age. Keys without a declared ``alg``, or with one outside the
        allow-list, are dropped: a key is only ever used with the algorithm it declares."""
        self._last_fetch = time.monotonic()
        req = urllib.request.Request(
            self.uri,
            headers={"Accept": "application/jwk-set+json, application/json", **self.headers},
        )
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                cache_control = resp.headers.get("Cache-Control")
                data = json.load(resp)
        except Exception as e:  # URLError, HTTPError, timeouts, bad JSON
            raise TokenRejected("jwks_unavailable", f"cannot fetch keys from {self.uri}: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise TokenRejected("jwks_unavailable", f"{self.uri} did not return a JWK set")
        data = {
            "keys": [
                k
                for k in data["keys"]
                if isinstance(k, dict) and k.get("alg") in self.algorithms and isinstance(k.get("kid"), str)
            ]
        }
        if not data["keys"]:
            raise TokenRejected(
                "jwks_unavailable",
                f"{self.uri} has no usable signing key (each needs a kid and an alg among {self.algorithms})",
            )
        age = _max_age(cache_control)
        lifespan = self.default_cache if age is None else age
        lifespan = max(self.min_refetch_interval, min(lifespan, self.max_cache), 0.001)
        if self.jwk_set_cache is not None:
            self.jwk_set_cache.lifespan = lifespan
        self.fetch_count += 1
        return data

    def _fresh(self) -> Any:
        cache = self.jwk_set_cache
        return cache.get() if cache is not None else None

    @staticmethod
    def _find(jwk_set: Any, kid: str) -> PyJWK | None:
        if jwk_set is None:
            return None
        for k in jwk_set.keys:
            if k.key_id == kid and k.public_key_use in ("sig", None):
                return k
        return None

    def cached_key(self, kid: str) -> PyJWK | None:
        """The key for ``kid`` if the cached JWKS is fresh and has it; never blocks."""
        return self._find(self._fresh(), kid)

    def get_signing_key(self, kid: str) -> PyJWK:
        """The key for ``kid``. Fetches (blocking) when the cache is stale or lacks the kid,
        but never more than once per ``min_refetch_interval``; falls back to the last good
        JWKS when a fetch fails."""
        with self._lock:
            jwk_set = self._fresh()
            key = self._find(jwk_set, kid)
            if key is not None:
                return key
            now = time.monotonic()
            if self._last_fetch is None or now - self._last_fetch >= self.min_refetch_interval:
                try:
                    jwk_set = PyJWKSet.from_dict(self.fetch_data())
                    if self.jwk_set_cache is not None:
                        self.jwk_set_cache.put(jwk_set)
                    self._last_good = jwk_set
                except TokenRejected as e:
                    if self._last_good is None:
                        raise
                    jwk_set, failure = self._last_good, e.reason
                except jwt.PyJWTError as e:  # a key PyJWT cannot use
                    raise TokenRejected("jwks_unavailable", f"unusable JWKS at {self.uri}: {e}") from None
                else:
                    failure = None
                key = self._find(jwk_set, kid)
                if key is not None:
                    return key
                if failure is not None:
                    raise TokenRejected(
                        "unknown_key", f"unknown signing key {kid!r} (not in the last good JWKS; refetching failed: {failure})"
                    )
                raise TokenRejected(
                    "unknown_key", f"unknown signing key {kid!r} (not in the JWKS, even after refetching it)"
                )
            if jwk_set is None:
                jwk_set = self._last_good
                if jwk_set is None:
                    raise TokenRejected(
                        "jwks_unavailable",
                        f"cannot fetch keys from {self.uri} (the last attempt failed less than "
                        f"{self.min_refetch_interval:g} s ago)",
                    )
            key = self._find(jwk_set, kid)
            if key is not None:
                return key
            raise TokenRejected(
                "unknown_key",
                f"unknown signing key {kid!r} (not in the JWKS; it was fetched less than "
                f"{self.min_refetch_interval:g} s ago, so not refetched yet)",
            )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401
        return None


class Validator:
    """Validates access tokens of one ma-idp tenant (one issuer). Create it once per issuer
    and reuse it: it holds the JWKS cache. Thread-safe."""

    def __init__(
        self,
        issuer: str,
        audience: str = "music-assistant",
        *,
        jwks_uri: str | None = None,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway: float = 30,
        required_scope: str | None = None,
        min_refetch_interval: float = 10,
        default_cache: float = 300,
        max_cache: float = 86400,
        timeout: float = 10,
        now: Callable[[], float] = time.time,
    ) -> None:
        """
        :param issuer: the tenant's issuer, e.g. ``https://idp.example/t/home``.
        :param audience: the ``aud`` this service accepts (ma-idp's default ``music-assistant``).
        :param jwks_uri: defaults to ``{issuer}/jwks.json``.
        :param algorithms: accepted algorithms; a subset of ES256, RS256, EdDSA.
        :param leeway: clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds.
        :param required_scope: a scope every token must carry.
        :param min_refetch_interval: refetch the JWKS at most this often (seconds).
        :param default_cache: JWKS lifetime when the response has no ``max-age``.
        :param max_cache: upper bound on the JWKS lifetime whatever ``max-age`` says.
        :param now: the clock (seconds since the epoch), injectable for tests.
        """
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.jwks_uri = jwks_uri or f"{self.issuer}/jwks.json"
        algs = tuple(algorithms)
        bad = [a for a in algs if a in _NEVER or a not in DEFAULT_ALGORITHMS]
        if bad or not algs:
            raise ValueError(f"algorithms must be a non-empty subset of {DEFAULT_ALGORITHMS}, got {algs}")
        self.algorithms = algs
        self.leeway = float(leeway)
        self.required_scope = required_scope
        self.now = now
        self.jwks = _JWKSClient(
            self.jwks_uri,
            min_refetch_interval=min_refetch_interval,
            default_cache=default_cache,
            max_cache=max_cache,
            timeout=timeout,
            algorithms=algs,
        )

    # -- public API -------------------------------------------------------------------

    def validate(self, token: str) -> dict[str, Any]:
        """Validate ``token``; return its claims or raise :class:`TokenRejected`.
        May block on a JWKS fetch: in async code use :meth:`validate_async`."""
        header = self._check_header(token)
        key = self.jwks.cached_key(header["kid"]) or self.jwks.get_signing_key(header["kid"])
        return self._verify(token, header, key)

    async def validate_async(self, token: str) -> dict[str, Any]:
        """Like :meth:`validate`; a JWKS fetch (only when needed) runs in a worker thread."""
        header = self._check_header(token)
        key = self.jwks.cached_key(header["kid"])
        if key is None:
            key = await asyncio.to_thread(self.jwks.get_signing_key, header["kid"])
        return self._verify(token, header, key)

    # -- steps ------------------------------------------------------------------------

    def _check_header(self, token: str) -> dict[str, Any]:
        if isinstance(token, bytes):
            token = token.decode("ascii", "replace")
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_BYTES or token.count(".") != 2:
            raise TokenRejected("malformed", "malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed", "malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg in _NEVER or alg not in self.algorithms:
            raise TokenRejected("algorithm_not_allowed", f"algorithm {alg!r} is not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
            raise TokenRejected("wrong_type", f"not an access token (typ must be at+jwt, got {typ!r})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("no_key_id", "token has no key id (kid)")
        return header

    def _verify(self, token: str, header: dict[str, Any], key: PyJWK) -> dict[str, Any]:
        alg = header["alg"]
        # Only keys that declare their "alg" are kept (see fetch_data), so this is the
        # key's own algorithm, not one guessed from its type or taken from the header.
        # (PyJWK.algorithm_name is missing before PyJWT 2.9.)
        key_alg = getattr(key, "algorithm_name", None) or getattr(key, "_jwk_data", {}).get("alg")
        if key_alg != alg:
            raise TokenRejected(
                "algorithm_mismatch",
                f"the token's algorithm {alg!r} does not match its key's ({key_alg!r})",
            )
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                # Time claims are checked below against the injectable clock.
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad_signature", "invalid signature") from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenRejected("missing_claim", f"missing claim {e.claim}") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("wrong_issuer", f"wrong issuer (expected {self.issuer})") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong_audience", f"wrong audience (expected {self.audience})") from None
        except jwt.PyJWTError as e:
            raise TokenRejected("malformed", f"malformed token ({e})") from None
        self._check_times(claims)
        if not isinstance(claims.get("client_id"), str) or not isinstance(claims.get("sub"), str):
            raise TokenRejected("malformed", "malformed token (sub and client_id must be strings)")
        if self.required_scope is not None:
            scope = claims.get("scope")
            if not isinstance(scope, str) or self.required_scope not in scope.split(" "):
                raise TokenRejected("missing_scope", f"scope {self.required_scope} not granted")
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = float(self.now())

        def number(name: str) -> float | None:
            v = claims.get(name)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TokenRejected("malformed", f"malformed token ({name} must be a number)")
            return float(v)

        exp, nbf, iat = number("exp"), number("nbf"), number("iat")
        if exp is not None and exp <= now - self.leeway:
            raise TokenRejected("expired", "token expired")
        if nbf is not None and nbf > now + self.leeway:
            raise TokenRejected("not_yet_valid", "token not yet valid (nbf is in the future)")
        if iat is not None and iat > now + self.leeway:
            raise TokenRejected("not_yet_valid", "token not yet valid (issued in the future)")
