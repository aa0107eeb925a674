"""Start a real ma-idp binary for interop tests and drive its sign-in and consent pages.

Environment:
  MA_IDP_BIN                the binary (default ../../target/debug/ma-idp from this file)
  MA_IDP_TEST_BACKEND       sqlite (default) or postgres
  MA_IDP_TEST_DATABASE_URL  for postgres: an empty database the caller created
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "clients" / "python"))

USERNAME = "alice"
PASSWORD = "correct horse battery staple"
SCOPES = ["openid", "profile", "music.control", "offline_access"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Client:
    tenant: str
    client_id: str
    client_secret: str
    redirect_uri: str


@dataclass
class Idp:
    bin: Path
    env: dict[str, str]
    base: str
    backend: str
    log_path: Path
    clients: dict[str, Client] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def issuer(self, tenant: str = "home") -> str:
        return f"{self.base}/t/{tenant}"

    def cli(self, *args: str, stdin: str | None = None) -> dict:
        """Run `ma-idp ARGS --json` and return the printed JSON object."""
        out = subprocess.run(
            [str(self.bin), *args, "--json"],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"ma-idp {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
        return json.loads(out.stdout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_idp(tmp: Path) -> Idp:
    default_bin = HERE / ".." / ".." / "target" / "debug" / "ma-idp"
    bin_path = Path(os.environ.get("MA_IDP_BIN") or default_bin).resolve()
    if not bin_path.exists():
        raise RuntimeError(f"{bin_path} missing: build it with `cargo build -p ma-idp` or set MA_IDP_BIN")
    backend = os.environ.get("MA_IDP_TEST_BACKEND", "sqlite").strip().lower()
    port = free_port()
    base = f"http://localhost:{port}"
    # A clean environment: nothing MA_IDP_* from the caller leaks into the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MA_IDP_")}
    env.update(
        MA_IDP_DATA_DIR=str(tmp),
        MA_IDP_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        MA_IDP_PUBLIC_URL=base,
        # Cheap password hashing: these tests are about tokens, not argon2's cost.
        MA_IDP_ARGON2__M_COST="8192",
        MA_IDP_ARGON2__T_COST="1",
        MA_IDP_ARGON2__P_COST="1",
        MA_IDP_WORKERS="2",
    )
    if backend == "postgres":
        url = os.environ.get("MA_IDP_TEST_DATABASE_URL")
        if not url:
            raise RuntimeError("MA_IDP_TEST_BACKEND=postgres needs MA_IDP_TEST_DATABASE_URL (an empty database)")
        env["MA_IDP_DATABASE_URL"] = url
    elif backend != "sqlite":
        raise RuntimeError(f"MA_IDP_TEST_BACKEND must be sqlite or postgres, not {backend!r}")
    idp = Idp(bin=bin_path, env=env, base=base, backend=backend, log_path=tmp / "server.log")

    redirect_uri = f"http://localhost:{free_port()}/cb"  # nothing listens: only Location is read
    for slug, name in (("home", "Our home"), ("other", "Another home")):
        idp.cli("tenant", "create", slug, "--name", name)
        idp.cli("user", "create", "--tenant", slug, USERNAME, "--password-stdin", stdin=PASSWORD + "\n")
        scope_args = [a for s in SCOPES for a in ("--scope", s)]
        c = idp.cli(
            "client", "create", "--tenant", slug, "--name", "Python interop",
            "--redirect-uri", redirect_uri, *scope_args,
        )
        idp.clients[slug] = Client(slug, c["client_id"], c["client_secret"], redirect_uri)

    log = open(idp.log_path, "wb")
    idp.proc = subprocess.Popen(
        [str(bin_path), "serve", "--listen", f"127.0.0.1:{port}", "--public-url", base],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 60
    while True:
        if idp.proc.poll() is not None:
            raise RuntimeError(f"ma-idp serve exited with {idp.proc.returncode}:\n{idp.log()}")
        try:
            if requests.get(f"{base}/ready", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_idp(idp)
            raise RuntimeError(f"ma-idp did not become ready in 60 s:\n{idp.log()}")
        time.sleep(0.1)
    return idp


def stop_idp(idp: Idp) -> None:
    p = idp.proc
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=15)


# -- the browser ------------------------------------------------------------------------


def hidden(page: str, name: str) -> str:
    m = re.search(rf'name="{re.escape(name)}"\s+value="([^"]*)"', page)
    if not m:
        raise AssertionError(f"no hidden field {name!r} in page:\n{page[:3000]}")
    return html.unescape(m.group(1))


def _form_action(page: str, fallback: str) -> str:
    m = re.search(r'<form[^>]*\baction="([^"]*)"', page)
    return html.unescape(m.group(1)) if m else fallback


def sign_in_and_consent(authorize_url: str, username: str = USERNAME, password: str = PASSWORD) -> str:
    """Open the authorize URL in a fresh cookie-keeping browser that does not follow
    redirects, sign in with a password, approve consent if asked, and return the final
    redirect's Location (the client's redirect_uri with code, state and iss)."""
    b = requests.Session()
    b.headers["User-Agent"] = "Mozilla/5.0 (interop test; python-requests)"
    r = b.get(authorize_url, allow_redirects=False, timeout=10)
    assert r.status_code == 200, f"authorize should show the sign-in page, got {r.status_code}: {r.text[:2000]}"
    post_to = urljoin(authorize_url, _form_action(r.text, urlsplit(authorize_url).path))
    r = b.post(
        post_to,
        data={
            "csrf": hidden(r.text, "csrf"),
            "rid": hidden(r.text, "rid"),
            "action": "login",
            "username": username,
            "password": password,
        },
        allow_redirects=False,
        timeout=30,
    )
    # The sign-in answers with the consent page, or with the redirect back when consent is
    # remembered.
    if r.status_code == 200:
        assert "Allow" in r.text, f"consent page expected:\n{r.text[:3000]}"
        post_to = urljoin(post_to, _form_action(r.text, urlsplit(authorize_url).path))
        r = b.post(
            post_to,
            data={"csrf": hidden(r.text, "csrf"), "rid": hidden(r.text, "rid"), "action": "approve"},
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 303, f"approve should redirect (303), got {r.status_code}: {r.text[:2000]}"
    else:
        assert r.status_code == 303, f"remembered consent should redirect, got {r.status_code}: {r.text[:2000]}"
    return r.headers["Location"]


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def cleanup(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def make_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="ma-idp-interop-"))


def pkce_pair() -> tuple[str, str]:
    import hashlib

    verifier = b64url(secrets.token_bytes(48))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def code_flow_tokens(idp: Idp, tenant: str = "home", scope: str = "music.control offline_access") -> dict:
    """Authorization code + PKCE with plain requests; the token response JSON."""
    from urllib.parse import urlencode

    c = idp.clients[tenant]
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    url = f"{idp.issuer(tenant)}/authorize?" + urlencode(
        {
            "client_id": c.client_id,
            "response_type": "code",
            "redirect_uri": c.redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    q = query(sign_in_and_consent(url))
    assert q.get("state") == state, q
    r = requests.post(
        f"{idp.issuer(tenant)}/token",
        data={
            "grant_type": "authorization_code",
            "code": q["code"],
            "redirect_uri": c.redirect_uri,
            "code_verifier": verifier,
        },
        auth=(c.client_id, c.client_secret),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()
