// Interoperability test: ma-idp against panva's `openid-client` (v6) and `jose`.
//
// Starts a real ma-idp (the binary at $MA_IDP_BIN, default ../../target/debug/ma-idp relative
// to this file) on SQLite (default) or PostgreSQL, provisions a tenant, a user and a
// confidential client through the CLI, and then plays a relying party with openid-client:
//
//   discovery (OIDC and RFC 8414) -> authorization code + PKCE S256 + nonce + state
//   -> the real sign-in and consent pages, driven with fetch (cookies kept here)
//   -> authorizationCodeGrant (client_secret_basic; ID token checked by the library,
//      signature too via enableNonRepudiationChecks) -> fetchUserInfo -> refreshTokenGrant
//   -> tokenIntrospection -> tokenRevocation -> refresh with the revoked token = invalid_grant
//
// Usage:
//   npm ci --prefix interop/js
//   node interop/js/test.mjs
//   MA_IDP_TEST_BACKEND=postgres MA_IDP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/db \
//     node interop/js/test.mjs
//
// Exit code 0 only when every check passed.

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

import * as client from 'openid-client';
import * as jose from 'jose';

// ---------------------------------------------------------------------------------------------
// Settings

const BIN = process.env.MA_IDP_BIN || fileURLToPath(new URL('../../target/debug/ma-idp', import.meta.url));
const BACKEND = (process.env.MA_IDP_TEST_BACKEND || 'sqlite').toLowerCase();
const PG_URL = process.env.MA_IDP_TEST_DATABASE_URL || '';
const TENANT = 'home';
const USERNAME = 'alice';
const PASSWORD = `interop-${randomBytes(12).toString('base64url')}`;
const SCOPES = ['openid', 'profile', 'email', 'offline_access', 'music.control'];
const OVERALL_TIMEOUT_MS = Number(process.env.INTEROP_TIMEOUT_MS || 180_000);

// ---------------------------------------------------------------------------------------------
// Reporting

let passed = 0;
const log = (...a) => console.log(...a);
const VERBOSE = process.env.INTEROP_VERBOSE === '1';
/** With INTEROP_VERBOSE=1, print what the server answered (no secrets: tokens are cut). */
const note = (label, v) => {
  if (VERBOSE) log(`       ${label}: ${typeof v === 'string' ? v : safeJson(v)}`);
};
const cut = (t) => (typeof t === 'string' && t.length > 12 ? `${t.slice(0, 8)}…(${t.length})` : t);

async function step(name, fn) {
  const t0 = Date.now();
  try {
    const out = await fn();
    passed += 1;
    log(`  ok   ${name} (${Date.now() - t0} ms)`);
    return out;
  } catch (e) {
    log(`  FAIL ${name}`);
    throw Object.assign(new Error(`step "${name}" failed: ${e?.message ?? e}`), { cause: e });
  }
}

/** Everything the library attaches to its errors, for a clear failure message. */
function describeError(e) {
  const lines = [];
  let cur = e;
  const seen = new Set();
  while (cur && !seen.has(cur)) {
    seen.add(cur);
    const parts = [`${cur.name ?? 'Error'}: ${cur.message}`];
    for (const k of ['code', 'error', 'error_description', 'status']) {
      if (cur[k] !== undefined) parts.push(`${k}=${JSON.stringify(cur[k])}`);
    }
    if (cur.cause && typeof cur.cause === 'object' && !(cur.cause instanceof Error)) {
      const j = safeJson(cur.cause);
      parts.push(`cause=${j.length > 600 ? `${j.slice(0, 600)}…` : j}`);
    }
    lines.push(parts.join(' '));
    cur = cur.cause instanceof Error ? cur.cause : undefined;
  }
  return lines.join('\n    caused by ');
}

function safeJson(v) {
  try {
    return JSON.stringify(v, (_k, x) => (x instanceof Response ? `[Response ${x.status}]` : x));
  } catch {
    return String(v);
  }
}

/** Await a promise that must reject with an OAuth error response `code`. */
async function expectOAuthError(promise, code) {
  try {
    await promise;
  } catch (e) {
    assert.ok(
      e instanceof client.ResponseBodyError,
      `expected a ResponseBodyError (${code}), got ${describeError(e)}`,
    );
    assert.equal(e.error, code, `error code: ${describeError(e)}`);
    note('error', describeError(e));
    return e;
  }
  assert.fail(`expected the request to fail with ${code}, but it succeeded`);
}

// ---------------------------------------------------------------------------------------------
// The ma-idp process

const dataDir = mkdtempSync(join(tmpdir(), 'ma-idp-interop-js-'));
const masterKey = randomBytes(32).toString('base64');
let server = null;
let serverLog = '';

function childEnv() {
  // ma-idp reads every MA_IDP_* variable as a setting: pass only the ones meant for it.
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('MA_IDP_')) env[k] = v;
  }
  env.MA_IDP_DATA_DIR = dataDir;
  env.MA_IDP_MASTER_KEY = masterKey;
  if (BACKEND === 'postgres') env.MA_IDP_DATABASE_URL = PG_URL;
  env.RUST_LOG = process.env.RUST_LOG || 'info';
  return env;
}

function cli(args, input) {
  const r = spawnSync(BIN, [...args, '--json'], {
    env: childEnv(),
    input: input ?? '',
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (r.error) throw new Error(`ma-idp ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`ma-idp ${args.join(' ')} exited ${r.status}:\n${r.stderr}`);
  }
  const line = r.stdout.trim().split('\n').pop();
  try {
    return JSON.parse(line);
  } catch {
    throw new Error(`ma-idp ${args.join(' ')} printed no JSON object:\n${r.stdout}\n${r.stderr}`);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startServer(port) {
  const base = `http://localhost:${port}`;
  server = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--public-url', base], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (d) => {
    serverLog += d.toString();
    if (serverLog.length > 200_000) serverLog = serverLog.slice(-100_000);
  };
  server.stdout.on('data', keep);
  server.stderr.on('data', keep);
  let exited = null;
  server.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`ma-idp serve exited early (${safeJson(exited)})`);
    try {
      const r = await fetch(`${base}/ready`, { signal: AbortSignal.timeout(2_000) });
      if (r.status === 200) return base;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('ma-idp did not answer GET /ready with 200 within 60 s');
}

let cleanedUp = false;
async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const done = new Promise((r) => server.once('exit', r));
  server.kill('SIGTERM');
  const t = setTimeout(() => server.kill('SIGKILL'), 5_000);
  await done;
  clearTimeout(t);
}

function cleanupSync() {
  if (cleanedUp) return;
  cleanedUp = true;
  if (server && server.exitCode === null && server.signalCode === null) {
    try {
      server.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  try {
    rmSync(dataDir, { recursive: true, force: true });
  } catch {
    // best effort
  }
}

process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`\ninterrupted by ${sig}`);
    cleanupSync();
    process.exit(1);
  });
}

// ---------------------------------------------------------------------------------------------
// A browser: fetch with manual redirects and a cookie jar

class Browser {
  constructor() {
    this.jar = new Map();
  }

  cookieHeader() {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  store(resp) {
    for (const sc of resp.headers.getSetCookie()) {
      const [pair, ...attrs] = sc.split(';');
      const eq = pair.indexOf('=');
      if (eq < 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => {
        const [k, v] = a.trim().split('=');
        if (k.toLowerCase() === 'max-age') return Number(v) <= 0;
        if (k.toLowerCase() === 'expires') return Date.parse(v) < Date.now();
        return false;
      });
      if (expired || value === '') this.jar.delete(name);
      else this.jar.set(name, value);
    }
  }

  async request(url, init = {}) {
    const headers = new Headers(init.headers || {});
    headers.set('user-agent', 'Mozilla/5.0 (ma-idp interop test; openid-client)');
    headers.set('accept', 'text/html');
    if (this.jar.size) headers.set('cookie', this.cookieHeader());
    const resp = await fetch(url, {
      ...init,
      headers,
      redirect: 'manual',
      signal: AbortSignal.timeout(60_000),
    });
    this.store(resp);
    return resp;
  }

  get(url) {
    return this.request(url);
  }

  post(url, form) {
    return this.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
    });
  }
}

function decodeEntities(s) {
  return s
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#([0-9]+);/g, (_, d) => String.fromCodePoint(parseInt(d, 10)))
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

/** The value of the form input `name` in `html` (attributes in any order). */
function hiddenField(html, name) {
  for (const m of html.matchAll(/<input\b[^>]*>/gi)) {
    const tag = m[0];
    const attr = (a) => {
      const r = new RegExp(`\\b${a}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`, 'i').exec(tag);
      return r ? decodeEntities(r[1] ?? r[2]) : undefined;
    };
    if (attr('name') === name) return attr('value') ?? '';
  }
  throw new Error(`no input named "${name}" in page:\n${html.slice(0, 3000)}`);
}

function locationOf(resp, base) {
  const loc = resp.headers.get('location');
  assert.ok(loc, `no Location header on ${resp.status} answer`);
  return new URL(loc, base).href;
}

// ---------------------------------------------------------------------------------------------
// The test

async function main() {
  log(`ma-idp interop test with openid-client — backend: ${BACKEND}`);
  log(`  binary: ${BIN}`);
  assert.ok(existsSync(BIN), `ma-idp binary not found at ${BIN} (build it: cargo build -p ma-idp, or set MA_IDP_BIN)`);
  assert.ok(['sqlite', 'postgres'].includes(BACKEND), `MA_IDP_TEST_BACKEND must be sqlite or postgres, not ${BACKEND}`);
  if (BACKEND === 'postgres') {
    assert.ok(PG_URL, 'MA_IDP_TEST_BACKEND=postgres needs MA_IDP_TEST_DATABASE_URL (an empty database)');
  }

  const port = await freePort();
  let cbPort = await freePort();
  while (cbPort === port) cbPort = await freePort();
  const redirectUri = `http://localhost:${cbPort}/cb`;

  // -- provisioning through the CLI
  const c = await step('CLI: tenant, user, confidential client', async () => {
    const t = cli(['tenant', 'create', TENANT, '--name', 'Interop home']);
    assert.equal(t.slug, TENANT);
    const u = cli(['user', 'create', '--tenant', TENANT, USERNAME, '--password-stdin'], `${PASSWORD}\n`);
    assert.equal(u.username, USERNAME);
    assert.equal(u.has_password, true);
    const args = ['client', 'create', '--tenant', TENANT, '--name', 'openid-client interop', '--redirect-uri', redirectUri];
    for (const s of SCOPES) args.push('--scope', s);
    const cl = cli(args);
    assert.ok(cl.client_id, 'client_id printed');
    assert.ok(cl.client_secret, 'client_secret printed once');
    assert.equal(cl.public, false);
    return cl;
  });

  const base = await step(`serve on 127.0.0.1:${port}, GET /ready = 200`, () => startServer(port));
  const issuer = `${base}/t/${TENANT}`;

  // -- discovery
  const rawToken = [];
  /** The raw JSON of the last token endpoint answer must carry what RFC 6749 §5.1 says. */
  const checkRawTokenResponse = () => {
    const last = rawToken.at(-1);
    assert.ok(last, 'token endpoint answer recorded');
    assert.equal(last.status, 200);
    assert.match(String(last.contentType), /^application\/json/i, `content-type ${last.contentType}`);
    assert.match(String(last.cacheControl), /no-store/i, `Cache-Control: no-store (RFC 6749 §5.1), got ${last.cacheControl}`);
    assert.equal(typeof last.body.expires_in, 'number', `expires_in is a JSON number: ${safeJson(last.body.expires_in)}`);
    assert.ok(Number.isInteger(last.body.expires_in), `expires_in is an integer: ${last.body.expires_in}`);
    assert.equal(last.body.token_type, 'Bearer', `token_type exactly "Bearer": ${last.body.token_type}`);
  };
  const config = await step(`discovery of ${issuer} (OIDC)`, async () => {
    const cfg = await client.discovery(
      new URL(issuer),
      c.client_id,
      { redirect_uris: [redirectUri], response_types: ['code'] },
      client.ClientSecretBasic(c.client_secret),
      { execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks] },
    );
    const m = cfg.serverMetadata();
    note('discovery', m);
    assert.equal(m.issuer, issuer);
    assert.ok(m.supportsPKCE(), 'code_challenge_methods_supported lists S256');
    assert.ok(m.token_endpoint_auth_methods_supported?.includes('client_secret_basic'));
    assert.ok(m.id_token_signing_alg_values_supported?.includes('RS256'));
    assert.ok(m.response_types_supported?.includes('code'));
    assert.ok(m.subject_types_supported?.length, 'subject_types_supported (required by OIDC Discovery)');
    for (const k of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'revocation_endpoint', 'introspection_endpoint']) {
      assert.ok(m[k]?.startsWith(`${issuer}/`), `${k} = ${m[k]}`);
    }
    // Keep the raw token endpoint answers: the library normalizes token_type and parses a
    // string expires_in, which would hide what Alexa (integer expires_in) would reject.
    cfg[client.customFetch] = async (url, options) => {
      const resp = await fetch(url, options);
      if (url === m.token_endpoint) {
        const text = await resp.clone().text();
        try {
          rawToken.push({ status: resp.status, body: JSON.parse(text), contentType: resp.headers.get('content-type'), cacheControl: resp.headers.get('cache-control') });
        } catch {
          rawToken.push({ status: resp.status, body: text, contentType: resp.headers.get('content-type') });
        }
      }
      return resp;
    };
    return cfg;
  });

  await step(`discovery of ${issuer} (RFC 8414, /.well-known/oauth-authorization-server/t/${TENANT})`, async () => {
    const cfg = await client.discovery(new URL(issuer), c.client_id, undefined, client.ClientSecretBasic(c.client_secret), {
      algorithm: 'oauth2',
      execute: [client.allowInsecureRequests],
    });
    const a = cfg.serverMetadata();
    const o = config.serverMetadata();
    assert.equal(a.issuer, issuer);
    for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'revocation_endpoint', 'introspection_endpoint']) {
      assert.equal(a[k], o[k], `${k} same under both paths`);
    }
  });

  // -- authorization request
  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const nonce = client.randomNonce();
  const state = client.randomState();
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: SCOPES.join(' '),
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    nonce,
    state,
  });

  // -- the real sign-in and consent pages
  const browser = new Browser();
  const callbackUrl = await step('browser: authorize -> sign in -> consent -> redirect with code', async () => {
    assert.equal(authUrl.origin + authUrl.pathname, config.serverMetadata().authorization_endpoint);
    let r = await browser.get(authUrl);
    let html = await r.text();
    assert.equal(r.status, 200, `GET authorize shows the sign-in page, got ${r.status}: ${html.slice(0, 500)}`);
    assert.match(html, /Sign in/, 'sign-in page');
    const formAction = authUrl.origin + authUrl.pathname;
    r = await browser.post(formAction, {
      csrf: hiddenField(html, 'csrf'),
      rid: hiddenField(html, 'rid'),
      action: 'login',
      username: USERNAME,
      password: PASSWORD,
    });
    // The sign-in answers with the consent page, or with the redirect back when consent is
    // remembered.
    assert.ok([200, 303].includes(r.status), `sign-in answers 200 or 303, got ${r.status}`);
    assert.ok(browser.jar.has('ma-idp'), `session cookie "ma-idp" set (have: ${[...browser.jar.keys()]})`);
    let next;
    if (r.status === 200) {
      html = await r.text();
      assert.match(html, /Allow/, 'consent page');
      r = await browser.post(formAction, {
        csrf: hiddenField(html, 'csrf'),
        rid: hiddenField(html, 'rid'),
        action: 'approve',
      });
      assert.equal(r.status, 303, `consent answers 303, got ${r.status}`);
      next = locationOf(r, base);
    } else {
      next = locationOf(r, base);
    }
    const u = new URL(next);
    assert.equal(u.origin + u.pathname, redirectUri, `redirected back to the client: ${next}`);
    assert.ok(u.searchParams.get('code'), `code in ${next}`);
    assert.equal(u.searchParams.get('state'), state, 'state echoed exactly');
    assert.equal(u.searchParams.get('iss'), issuer, 'RFC 9207 iss in the authorization response');
    return u;
  });

  // -- code exchange
  const tokens = await step('authorizationCodeGrant (client_secret_basic, PKCE, nonce, state, ID token)', async () => {
    const t = await client.authorizationCodeGrant(config, callbackUrl, {
      pkceCodeVerifier: codeVerifier,
      expectedNonce: nonce,
      expectedState: state,
      idTokenExpected: true,
    });
    note('token response', Object.fromEntries(Object.entries(t).map(([k, v]) => [k, k.endsWith('token') ? cut(v) : v])));
    checkRawTokenResponse();
    assert.ok(t.access_token, 'access_token');
    assert.equal(String(t.token_type).toLowerCase(), 'bearer', `token_type ${t.token_type}`);
    assert.ok(Number.isInteger(t.expires_in) && t.expires_in >= 360, `integer expires_in >= 360: ${t.expires_in}`);
    assert.ok(t.refresh_token, 'refresh_token (offline_access)');
    assert.ok(t.id_token, 'id_token');
    const scope = new Set(String(t.scope ?? '').split(' '));
    for (const s of SCOPES) assert.ok(scope.has(s), `granted scope includes ${s}: ${t.scope}`);
    return t;
  });

  const claims = await step('ID token claims and at_hash', async () => {
    const idc = tokens.claims();
    note('ID token header', jose.decodeProtectedHeader(tokens.id_token));
    note('ID token claims', idc);
    assert.equal(idc.iss, issuer);
    assert.ok(idc.aud === c.client_id || (Array.isArray(idc.aud) && idc.aud.includes(c.client_id)), `aud ${idc.aud}`);
    assert.equal(idc.nonce, nonce);
    assert.ok(typeof idc.sub === 'string' && idc.sub.length > 0, 'sub');
    assert.ok(Number.isInteger(idc.auth_time), `auth_time ${idc.auth_time}`);
    assert.ok(Array.isArray(idc.amr) && idc.amr.length > 0, `amr ${safeJson(idc.amr)}`);
    const header = jose.decodeProtectedHeader(tokens.id_token);
    assert.equal(header.alg, 'RS256', 'ID token alg (OIDC default)');
    assert.ok(header.kid, 'ID token kid');
    // openid-client checks c_hash only for hybrid flows; at_hash is checked here (OIDC Core 3.1.3.6).
    const digest = createHash('sha256').update(tokens.access_token).digest();
    const expected = digest.subarray(0, digest.length / 2).toString('base64url');
    assert.equal(idc.at_hash, expected, 'at_hash = left half of SHA-256(access_token)');
    return idc;
  });

  const jwks = jose.createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri));

  await step('ID token verifies with jose against the JWKS', async () => {
    const { payload } = await jose.jwtVerify(tokens.id_token, jwks, {
      issuer,
      audience: c.client_id,
      algorithms: ['RS256'],
    });
    assert.equal(payload.sub, claims.sub);
  });

  await step('access token is an RFC 9068 JWT that verifies with jose against the JWKS', async () => {
    const { payload, protectedHeader } = await jose.jwtVerify(tokens.access_token, jwks, {
      issuer,
      audience: 'music-assistant',
      typ: 'at+jwt',
    });
    note('access token header', protectedHeader);
    note('access token claims', payload);
    assert.equal(protectedHeader.alg, 'ES256');
    assert.equal(payload.sub, claims.sub);
    assert.equal(payload.client_id, c.client_id);
    for (const k of ['exp', 'iat', 'jti']) assert.ok(payload[k] !== undefined, `access token claim ${k}`);
    assert.ok(String(payload.scope).split(' ').includes('music.control'), `scope ${payload.scope}`);
    assert.ok(tokens.access_token.length < 2048, 'access token under 2,048 bytes');
  });

  await step('fetchUserInfo (sub must match the ID token)', async () => {
    const ui = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    note('userinfo', ui);
    assert.equal(ui.sub, claims.sub);
    assert.equal(ui.preferred_username, USERNAME, `preferred_username ${ui.preferred_username}`);
  });

  // -- refresh
  const refreshed = await step('refreshTokenGrant (rotated refresh token, integer expires_in)', async () => {
    const t = await client.refreshTokenGrant(config, tokens.refresh_token);
    note('refresh response', Object.fromEntries(Object.entries(t).map(([k, v]) => [k, k.endsWith('token') ? cut(v) : v])));
    checkRawTokenResponse();
    assert.ok(t.access_token && t.access_token !== tokens.access_token, 'new access token');
    assert.ok(t.refresh_token, 'a refresh token on refresh');
    assert.notEqual(t.refresh_token, tokens.refresh_token, 'refresh token rotated');
    assert.ok(Number.isInteger(t.expires_in) && t.expires_in >= 360, `integer expires_in >= 360: ${t.expires_in}`);
    assert.equal(String(t.token_type).toLowerCase(), 'bearer');
    if (t.id_token) {
      // OIDC Core §12.2: same iss, sub, aud; auth_time of the original sign-in; nonce absent
      // or unchanged.
      const rc = t.claims();
      note('refreshed ID token claims', rc);
      assert.equal(rc.iss, claims.iss);
      assert.equal(rc.sub, claims.sub, 'refreshed ID token has the same sub');
      assert.deepEqual(rc.aud, claims.aud);
      if (rc.auth_time !== undefined) assert.equal(rc.auth_time, claims.auth_time, 'auth_time of the original authentication');
      if (rc.nonce !== undefined) assert.equal(rc.nonce, claims.nonce, 'nonce, if present, unchanged');
      if (rc.at_hash !== undefined) {
        const d = createHash('sha256').update(t.access_token).digest();
        assert.equal(rc.at_hash, d.subarray(0, 16).toString('base64url'), 'at_hash of the new access token');
      }
    }
    return t;
  });

  // -- introspection
  await step('tokenIntrospection: refreshed access token active', async () => {
    const i = await client.tokenIntrospection(config, refreshed.access_token);
    note('introspection (access token)', i);
    assert.equal(i.active, true, safeJson(i));
    assert.equal(i.sub, claims.sub);
    assert.equal(i.client_id, c.client_id);
    assert.equal(i.iss, issuer);
    assert.ok(Number.isInteger(i.exp), `exp ${i.exp}`);
  });

  await step('tokenIntrospection: refresh token active, garbage inactive', async () => {
    const i = await client.tokenIntrospection(config, refreshed.refresh_token);
    note('introspection (refresh token)', i);
    assert.equal(i.active, true, safeJson(i));
    const g = await client.tokenIntrospection(config, 'not-a-token');
    assert.equal(g.active, false, safeJson(g));
  });

  // -- revocation
  await step('tokenRevocation of the refresh token', async () => {
    await client.tokenRevocation(config, refreshed.refresh_token, { token_type_hint: 'refresh_token' });
  });

  await step('tokenIntrospection after revocation: refresh and access token inactive', async () => {
    const r = await client.tokenIntrospection(config, refreshed.refresh_token);
    assert.equal(r.active, false, `refresh token: ${safeJson(r)}`);
    const a = await client.tokenIntrospection(config, refreshed.access_token);
    assert.equal(a.active, false, `access token of the revoked family: ${safeJson(a)}`);
  });

  await step('refreshTokenGrant with the revoked refresh token fails with invalid_grant', async () => {
    const e = await expectOAuthError(client.refreshTokenGrant(config, refreshed.refresh_token), 'invalid_grant');
    assert.equal(e.status, 400, `HTTP status ${e.status}`);
  });

  await step('fetchUserInfo with a revoked access token: 401 Bearer invalid_token challenge', async () => {
    try {
      await client.fetchUserInfo(config, refreshed.access_token, claims.sub);
    } catch (e) {
      assert.ok(e instanceof client.WWWAuthenticateChallengeError, `expected WWWAuthenticateChallengeError, got ${describeError(e)}`);
      assert.equal(e.status, 401);
      const ch = (e.cause ?? []).find((x) => x.scheme === 'bearer');
      assert.ok(ch, `a Bearer challenge: ${describeError(e)}`);
      note('revoked token at userinfo', describeError(e));
      assert.equal(ch.parameters.error, 'invalid_token', describeError(e));
      return;
    }
    assert.fail('userinfo accepted a revoked access token');
  });

  await step('authorizationCodeGrant replay of the used code fails with invalid_grant', async () => {
    await expectOAuthError(
      client.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: codeVerifier,
        expectedNonce: nonce,
        expectedState: state,
      }),
      'invalid_grant',
    );
  });

  /** A new authorization in the signed-in browser: consent (or a remembered one), no sign-in. */
  async function authorizeAgain() {
    const verifier = client.randomPKCECodeVerifier();
    const st = client.randomState();
    const nn = client.randomNonce();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: SCOPES.join(' '),
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      nonce: nn,
      state: st,
    });
    let r = await browser.get(url);
    if (r.status === 200) {
      const html = await r.text();
      assert.doesNotMatch(html, /name="password"/, 'signed in already: no sign-in form');
      assert.match(html, /Allow/, 'consent page');
      r = await browser.post(url.origin + url.pathname, {
        csrf: hiddenField(html, 'csrf'),
        rid: hiddenField(html, 'rid'),
        action: 'approve',
      });
      assert.equal(r.status, 303);
    } else {
      assert.ok([302, 303].includes(r.status), `got ${r.status}`);
    }
    const next = new URL(locationOf(r, base));
    assert.ok(next.searchParams.get('code'), `code in ${next}`);
    return { next, checks: { pkceCodeVerifier: verifier, expectedNonce: nn, expectedState: st } };
  }

  await step('second authorization in the same browser session; a wrong PKCE verifier fails with invalid_grant', async () => {
    const { next, checks } = await authorizeAgain();
    await expectOAuthError(
      client.authorizationCodeGrant(config, next, { ...checks, pkceCodeVerifier: client.randomPKCECodeVerifier() }),
      'invalid_grant',
    );
  });

  await step('openid-client really checks the ID token signature (a tampered signature is rejected)', async () => {
    const { next, checks } = await authorizeAgain();
    const tampering = new client.Configuration(
      config.serverMetadata(),
      c.client_id,
      { redirect_uris: [redirectUri] },
      client.ClientSecretBasic(c.client_secret),
    );
    client.allowInsecureRequests(tampering);
    client.enableNonRepudiationChecks(tampering);
    tampering[client.customFetch] = async (url, options) => {
      const resp = await fetch(url, options);
      if (url !== config.serverMetadata().token_endpoint || resp.status !== 200) return resp;
      const body = await resp.json();
      const [h, p, sig] = body.id_token.split('.');
      const raw = Buffer.from(sig, 'base64url');
      raw[0] ^= 0xff;
      body.id_token = [h, p, raw.toString('base64url')].join('.');
      return new Response(JSON.stringify(body), { status: 200, headers: resp.headers });
    };
    try {
      await client.authorizationCodeGrant(tampering, next, checks);
    } catch (e) {
      note('tampered ID token', describeError(e));
      assert.match(describeError(e), /signature/i, describeError(e));
      return;
    }
    assert.fail('a tampered ID token signature was accepted');
  });

  await step('token endpoint with a wrong client secret fails with invalid_client', async () => {
    const bad = new client.Configuration(config.serverMetadata(), c.client_id, undefined, client.ClientSecretBasic('wrong-secret'));
    client.allowInsecureRequests(bad);
    try {
      await client.refreshTokenGrant(bad, tokens.refresh_token);
    } catch (e) {
      // RFC 6749 §5.2: 401 + WWW-Authenticate (Basic) when the client used the Authorization
      // header. openid-client surfaces the challenge, not the JSON body, so read the body here.
      if (e instanceof client.WWWAuthenticateChallengeError) {
        assert.equal(e.status, 401);
        assert.ok(e.cause.some((ch) => ch.scheme === 'basic'), `a Basic challenge: ${describeError(e)}`);
        const body = await e.response.json();
        note('wrong secret', `${describeError(e)} body=${safeJson(body)}`);
        assert.equal(body.error, 'invalid_client', `body ${safeJson(body)}`);
      } else {
        assert.ok(e instanceof client.ResponseBodyError, describeError(e));
        assert.equal(e.error, 'invalid_client', describeError(e));
      }
      return;
    }
    assert.fail('wrong client secret accepted');
  });
}

const watchdog = setTimeout(() => {
  console.error(`\nFAILED: the test did not finish within ${OVERALL_TIMEOUT_MS} ms`);
  cleanupSync();
  process.exit(2);
}, OVERALL_TIMEOUT_MS);
watchdog.unref();

let code = 0;
try {
  await main();
  log(`\nPASSED: ${passed} checks against ma-idp (${BACKEND}) with openid-client`);
} catch (e) {
  code = 1;
  console.error(`\nFAILED (${BACKEND}) after ${passed} passing checks:\n  ${describeError(e)}`);
  if (serverLog) {
    console.error(`\n--- ma-idp log (tail) ---\n${serverLog.slice(-6000)}`);
  }
} finally {
  try {
    await stopServer();
  } catch {
    // cleanupSync kills it
  }
  cleanupSync();
}
process.exit(code);
