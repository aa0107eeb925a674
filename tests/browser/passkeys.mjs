// Real-browser test of ma-idp's passkey pages: headless Chromium (playwright-core, the system
// /usr/bin/chromium) with a DevTools WebAuthn virtual authenticator, against the real
// `ma-idp` binary on SQLite (default) or PostgreSQL.
//
//   a. a member with no password opens a one-time enrollment link, clicks "Create a passkey"
//      and lands on the account page that lists it; the credential is resident (discoverable)
//   b. she signs out; the next phases re-add the same credential to a fresh browser
//   c. Alexa's authorize URL (300-character state) -> passkey sign-in without a username, by
//      autofill (conditional mediation, desktop) and by tapping "Sign in with a passkey"
//      (phone) -> consent page (client, account, scopes in words) -> "Allow" -> the browser
//      follows the redirect to the Alexa EU redirect URI with code and the exact state (seen
//      as the browser's request; Chromium resolves no host but localhost, so no network)
//      -> code exchange at POST /alexa/token with HTTP Basic, as Amazon's servers do it
//   d. screenshots at phone (390x844 @2x, mobile) and desktop (1280x800) width of the sign-in
//      page, the sign-in page with a wrong-password error, the consent page and the
//      enrollment page; no page overflows horizontally at phone width; no JavaScript dialog
//      and no pop-up ever opens.
//   e. a desktop app whose redirect URI is on the IPv6 loopback (`http://[::1]:…`, RFC 8252),
//      which the pages' CSP `form-action` cannot name: the consent form's answer still
//      reaches the app with a code it can exchange.
//
// Usage:
//   npm ci --prefix tests/browser
//   node tests/browser/passkeys.mjs
//   MA_IDP_TEST_BACKEND=postgres MA_IDP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/db \
//     node tests/browser/passkeys.mjs
// Environment: MA_IDP_BIN (default target/debug/ma-idp), CHROMIUM (default /usr/bin/chromium),
// BROWSER_TEST_TIMEOUT_MS, BROWSER_TEST_VERBOSE=1.
// Screenshots go to tests/artifacts/screenshots/<backend>/.
//
// Exit code 0 only when every check passed.

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

import { chromium } from 'playwright-core';

// ---------------------------------------------------------------------------------------------
// Settings

const BIN = process.env.MA_IDP_BIN || fileURLToPath(new URL('../../target/debug/ma-idp', import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BACKEND = (process.env.MA_IDP_TEST_BACKEND || 'sqlite').toLowerCase();
const PG_URL = process.env.MA_IDP_TEST_DATABASE_URL || '';
const OVERALL_TIMEOUT_MS = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 240_000);
const VERBOSE = process.env.BROWSER_TEST_VERBOSE === '1';
const SHOTS = fileURLToPath(new URL(`../artifacts/screenshots/${BACKEND}/`, import.meta.url));

const TENANT = 'home';
const TENANT_NAME = 'Our home';
const CLIENT_NAME = 'Amazon Alexa';
const CLIENT_ID = 'amazon-alexa';
const VENDOR = 'MKXZK47785HJ2';
const LAYLA = `https://layla.amazon.com/api/skill/link/${VENDOR}`;
// A desktop app's loopback redirect URI (nothing listens there; the context answers it).
const APP_V6 = 'http://[::1]:9999/cb';
const SCOPE = 'music.control user:read';
const SCOPE_WORDS = ['Play, pause and choose music on your Music Assistant', 'See your Music Assistant account'];
const ALICE_PASSWORD = `browser-${randomBytes(12).toString('base64url')}`;
const PASSKEY_NAME = 'Kitchen tablet';

const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const DESKTOP = { viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1, isMobile: false };

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // No name resolution except our own server: Alexa's redirect URI must never be reached, and
  // a redirect's follow-up request cannot be intercepted by page.route (Playwright limit).
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost',
];

const VIRTUAL_AUTHENTICATOR = {
  protocol: 'ctap2',
  transport: 'internal',
  hasResidentKey: true,
  hasUserVerification: true,
  isUserVerified: true,
  automaticPresenceSimulation: true,
};

// ---------------------------------------------------------------------------------------------
// Reporting

const log = (...a) => console.log(...a);
const note = (...a) => {
  if (VERBOSE) log('       ', ...a);
};
const results = [];

/** A check that must pass for the flow to go on. */
async function step(name, fn) {
  const t0 = Date.now();
  try {
    const out = await fn();
    results.push({ name, ok: true });
    log(`  ok   ${name} (${Date.now() - t0} ms)`);
    return out;
  } catch (e) {
    results.push({ name, ok: false, error: e });
    log(`  FAIL ${name}\n       ${String(e?.stack || e).split('\n').join('\n       ')}`);
    throw Object.assign(new Error(`step "${name}" failed: ${e?.message ?? e}`), { cause: e, reported: true });
  }
}

/** A check whose failure is reported but does not stop the flow. */
async function check(name, fn) {
  try {
    await step(name, fn);
  } catch {
    // recorded
  }
}

// ---------------------------------------------------------------------------------------------
// The ma-idp process (same shape as interop/js/test.mjs)

const dataDir = mkdtempSync(join(tmpdir(), 'ma-idp-browser-'));
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
  if (r.status !== 0) throw new Error(`ma-idp ${args.join(' ')} exited ${r.status}:\n${r.stderr}`);
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
  // A WebAuthn RP ID must be a domain: serve and browse on localhost, never 127.0.0.1.
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
    if (exited) throw new Error(`ma-idp serve exited early (${JSON.stringify(exited)})`);
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

async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const done = new Promise((r) => server.once('exit', r));
  server.kill('SIGTERM');
  const t = setTimeout(() => server.kill('SIGKILL'), 5_000);
  await done;
  clearTimeout(t);
}

let cleanedUp = false;
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
// The browser

let browser = null;
let base = '';
/** Problems seen by any page: dialogs, pop-ups, uncaught errors, console errors, stray requests. */
const incidents = [];
/** Problems known and reported to the page owners, printed but not failed. */
const knownIssues = [];
const consoleLines = [];

/**
 * A fresh context (its own cookies and storage) whose pages are watched for dialogs, pop-ups,
 * uncaught exceptions and console errors, and may reach only our server: Alexa's redirect URI
 * is answered with a stub here, anything else is refused and reported.
 */
async function newContext(label, device, extra = {}) {
  const context = await browser.newContext({ ...device, locale: 'en-US', ...extra });
  context.setDefaultTimeout(20_000);
  context.setDefaultNavigationTimeout(30_000);
  const alexaHits = [];
  const appHits = [];
  await context.route(
    (url) => url.origin !== base,
    async (route) => {
      const url = route.request().url();
      const stub = (hits, title, text) => {
        hits.push(url);
        return route.fulfill({
          status: 200,
          contentType: 'text/html; charset=utf-8',
          body: `<!doctype html><meta charset="utf-8"><title>${title} (stub)</title><p>${text} (stub).</p>`,
        });
      };
      if (url.startsWith(`${LAYLA}?`) || url === LAYLA) return stub(alexaHits, 'Alexa', 'Account linked');
      if (url.startsWith(`${APP_V6}?`)) return stub(appHits, 'App', 'Signed in');
      incidents.push(`${label}: request to another origin refused: ${url}`);
      await route.abort('blockedbyclient');
    },
  );
  let pages = 0;
  context.on('page', (page) => {
    pages += 1;
    if (pages > 1) incidents.push(`${label}: a pop-up or second page opened: ${page.url()}`);
    page.on('dialog', async (d) => {
      incidents.push(`${label}: a JavaScript ${d.type()} dialog fired on ${page.url()}: ${JSON.stringify(d.message())}`);
      await d.dismiss().catch(() => {});
    });
    page.on('pageerror', (e) => incidents.push(`${label}: uncaught exception on ${page.url()}: ${e.message}`));
    page.on('console', (m) => {
      const line = `${label}: console.${m.type()} on ${page.url()}: ${m.text()}`;
      consoleLines.push(line);
      note(line);
      // A document answered 401 (wrong password) is logged as a failed resource: expected.
      if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 401/.test(m.text())) {
        incidents.push(line);
      }
    });
  });
  return { context, alexaHits, appHits };
}

/**
 * Give `page` a DevTools WebAuthn virtual authenticator (a platform authenticator with user
 * verification that keeps resident keys), optionally holding `credential`.
 */
async function addAuthenticator(context, page, credential) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: VIRTUAL_AUTHENTICATOR });
  if (credential) {
    await cdp.send('WebAuthn.addCredential', {
      authenticatorId,
      credential: {
        credentialId: credential.credentialId,
        isResidentCredential: true,
        rpId: credential.rpId,
        privateKey: credential.privateKey,
        userHandle: credential.userHandle,
        signCount: credential.signCount,
      },
    });
  }
  const credentials = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
  // Take the authenticator away, so that no page can sign in with it any more.
  credentials.remove = () => cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
  return credentials;
}

const bodyText = (page) => page.evaluate(() => document.body.innerText);

async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** At phone width nothing may stick out sideways, and every button must be within reach. */
async function checkPhoneLayout(page, what) {
  const r = await page.evaluate(() => {
    const vw = window.innerWidth;
    const wide = [];
    for (const el of document.body.querySelectorAll('*')) {
      const b = el.getBoundingClientRect();
      if (b.width > 0 && (b.right > vw + 0.5 || b.left < -0.5)) {
        wide.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className ? `.${String(el.className).replace(/ /g, '.')}` : ''} [${Math.round(b.left)}..${Math.round(b.right)}]`);
      }
    }
    const buttons = [...document.querySelectorAll('button, input[type=submit]')]
      .filter((b) => b.offsetParent !== null)
      .map((b) => {
        const x = b.getBoundingClientRect();
        return { text: b.textContent.trim(), left: x.left, right: x.right, height: x.height };
      });
    return { scrollWidth: document.documentElement.scrollWidth, innerWidth: vw, wide: wide.slice(0, 10), buttons };
  });
  note(`${what}: scrollWidth ${r.scrollWidth}, innerWidth ${r.innerWidth}`);
  assert.ok(
    r.scrollWidth <= r.innerWidth && r.innerWidth <= PHONE.viewport.width,
    `${what} overflows at phone width: scrollWidth ${r.scrollWidth} > innerWidth ${r.innerWidth} (viewport ${PHONE.viewport.width}); too wide: ${r.wide.join(', ')}`,
  );
  for (const b of r.buttons) {
    assert.ok(b.left >= 0 && b.right <= r.innerWidth, `${what}: button "${b.text}" is off screen [${b.left}..${b.right}]`);
    assert.ok(b.height >= 44, `${what}: button "${b.text}" is ${b.height}px tall, under the 44px touch target`);
  }
}

function authorizeUrl(state) {
  const q = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: LAYLA,
    state,
    scope: SCOPE,
  });
  // Alexa encodes spaces as %20.
  return `${base}/alexa/authorize?${q.toString().replace(/\+/g, '%20')}`;
}

/** An opaque state like Alexa's: 300 characters, including ones that need escaping. */
function alexaState() {
  const s = `${randomBytes(240).toString('base64')}.-_~+/=`;
  return s.slice(0, 300 - 7) + s.slice(-7);
}

/**
 * On Alexa's authorize URL, sign in with the discoverable passkey `credential` without typing a
 * username, and wait for the consent page. Returns the authenticator's credentials afterwards
 * (their signature counter has moved on).
 *
 * `button`: the member taps "Sign in with a passkey". The authenticator is added only once the
 * page has started its conditional (autofill) request: Chromium's virtual authenticator would
 * otherwise answer that request at once, before any tap. The tap must abort it and run a
 * modal request.
 * `autofill`: the authenticator is there from the start, and the page's conditional-mediation
 * request signs in with no tap at all (what the virtual authenticator does for a pick from the
 * autofill list).
 */
async function passkeySignIn(context, page, url, credential, mode) {
  // What the page asks of the server, in order, to tell a tap from an autofill sign-in.
  const calls = [];
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (path.includes('/passkeys/login/')) calls.push(`${r.method()} ${path.split('/').pop()}`);
  });
  const consentUrl = /\/alexa\/authorize\?rid=/;
  let getCredentials = null;
  let consent = null;
  let expected = ['POST start', 'POST finish'];
  if (mode === 'autofill') {
    getCredentials = await addAuthenticator(context, page, credential);
    consent = page.waitForURL(consentUrl, { timeout: 30_000 });
    consent.catch(() => {});
  } else {
    // Note (without changing anything) when the page starts its conditional request.
    await page.addInitScript(() => {
      const c = navigator.credentials;
      if (!c || typeof c.get !== 'function') return;
      const get = c.get.bind(c);
      c.get = (options) => {
        if (options && options.mediation === 'conditional') window.__conditionalStarted = true;
        return get(options);
      };
    });
  }
  const resp = await page.goto(url);
  assert.equal(resp.status(), 200, `GET ${url} -> ${resp.status()}`);
  if (mode === 'button') {
    const button = page.locator('#passkey-button');
    await button.waitFor({ state: 'visible' });
    assert.equal(await button.innerText(), 'Sign in with a passkey');
    assert.equal(await page.locator('#username').inputValue(), '', 'no username typed');
    // Let the page's conditional request reach the browser before the authenticator exists
    // (a pending conditional request does not see credentials that appear later), so that
    // only the tap can sign in; the tap must abort it and run a modal request.
    const autofill = await page.evaluate(async () => Boolean(await PublicKeyCredential.isConditionalMediationAvailable?.()));
    if (autofill) {
      await page.waitForFunction(() => window.__conditionalStarted === true, null, { timeout: 15_000 });
      await page.waitForTimeout(500);
    }
    getCredentials = await addAuthenticator(context, page, credential);
    await page.waitForTimeout(300);
    assert.ok(page.url().startsWith(url), `still on the sign-in page before the tap: ${page.url()}`);
    assert.deepEqual(calls, autofill ? ['POST start'] : [], 'before the tap: at most the autofill request started');
    if (autofill) expected = ['POST start', 'POST start', 'POST finish'];
    consent = page.waitForURL(consentUrl, { timeout: 30_000 });
    consent.catch(() => {});
    await button.click({ noWaitAfter: true });
  }
  await consent;
  await page.locator('form.actions button[value=approve]').waitFor({ state: 'visible' });
  assert.deepEqual(calls, expected, `${mode}: passkey calls made by the page`);
  const creds = await getCredentials();
  assert.equal(creds.length, 1);
  assert.ok(creds[0].signCount > credential.signCount, `the authenticator signed: counter ${credential.signCount} -> ${creds[0].signCount}`);
  return creds[0];
}

// ---------------------------------------------------------------------------------------------
// The test

async function main() {
  log(`ma-idp browser test (passkeys, Alexa linking, layout) — backend: ${BACKEND}`);
  log(`  binary: ${BIN}`);
  log(`  chromium: ${CHROMIUM}`);
  assert.ok(existsSync(BIN), `ma-idp binary not found at ${BIN} (build it: cargo build -p ma-idp, or set MA_IDP_BIN)`);
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  assert.ok(['sqlite', 'postgres'].includes(BACKEND), `MA_IDP_TEST_BACKEND must be sqlite or postgres, not ${BACKEND}`);
  if (BACKEND === 'postgres') {
    assert.ok(PG_URL, 'MA_IDP_TEST_BACKEND=postgres needs MA_IDP_TEST_DATABASE_URL (an empty database)');
  }

  const port = await freePort();

  // -- provisioning through the CLI
  const { client, enrollPath } = await step('CLI: tenant, carol (no password), alice (password), Alexa client, enrollment link', async () => {
    const t = cli(['tenant', 'create', TENANT, '--name', TENANT_NAME]);
    assert.equal(t.slug, TENANT);
    const carol = cli(['user', 'create', '--tenant', TENANT, 'carol']);
    assert.equal(carol.has_password, false);
    const alice = cli(['user', 'create', '--tenant', TENANT, 'alice', '--password-stdin'], `${ALICE_PASSWORD}\n`);
    assert.equal(alice.has_password, true);
    const c = cli(['client', 'create', '--tenant', TENANT, '--name', CLIENT_NAME, '--alexa', VENDOR, '--client-id', CLIENT_ID]);
    assert.equal(c.client_id, CLIENT_ID);
    assert.ok(c.client_secret, 'client_secret printed once');
    assert.ok(c.redirect_uris.includes(LAYLA), `EU redirect URI registered: ${c.redirect_uris}`);
    const app = cli(['client', 'create', '--tenant', TENANT, '--name', 'Desktop app', '--client-id', 'desktop', '--public', '--redirect-uri', APP_V6]);
    assert.deepEqual(app.redirect_uris, [APP_V6]);
    const link = cli(['user', 'enroll-link', '--tenant', TENANT, 'carol']);
    assert.ok(link.url, 'enrollment url printed');
    // The CLI does not know the port we serve on: keep the path, browse on our origin.
    const u = new URL(link.url);
    assert.ok(u.pathname.startsWith(`/t/${TENANT}/enroll/`), `enrollment link path: ${u.pathname}`);
    return { client: c, enrollPath: u.pathname + u.search };
  });

  base = await step(`serve on localhost:${port}, GET /ready = 200`, () => startServer(port));
  const enrollUrl = base + enrollPath;

  browser = await step('launch headless Chromium', () =>
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 }),
  );
  log(`  Chromium ${browser.version()}`);

  // -- d (part 1). Screenshots of pages that need no sign-in, before anything changes them.
  for (const [width, device] of [['phone', PHONE], ['desktop', DESKTOP]]) {
    const { context } = await newContext(`screens-${width}`, device);
    const page = await context.newPage();
    await check(`${width}: fresh sign-in page (Alexa authorize) screenshot and layout`, async () => {
      const r = await page.goto(authorizeUrl('screenshot-state'));
      assert.equal(r.status(), 200);
      await page.locator('#passkey-button').waitFor({ state: 'visible' });
      const text = await bodyText(page);
      assert.match(text, /Sign in/);
      assert.ok(text.includes(CLIENT_NAME), `the sign-in page names the client: ${text}`);
      note(await screenshot(page, `login.${width}`));
      if (device === PHONE) await checkPhoneLayout(page, 'sign-in page');
    });
    await check(`${width}: wrong password for alice -> inline error, screenshot and layout`, async () => {
      await page.locator('#username').fill('alice');
      await page.locator('#password').fill('not-the-password');
      const [resp] = await Promise.all([
        page.waitForNavigation(),
        page.locator('#password-form button[type=submit]').click(),
      ]);
      assert.equal(new URL(page.url()).origin, base, `stays on our page: ${page.url()}`);
      note(`wrong password answered ${resp?.status()}`);
      const err = page.locator('#form-error');
      await err.waitFor({ state: 'visible' });
      const msg = (await err.innerText()).trim();
      assert.ok(msg.length > 0, 'inline error text');
      assert.ok(!/alice/.test(msg), `the error does not echo the username: ${msg}`);
      assert.equal(await page.locator('#username').inputValue(), 'alice', 'username kept');
      assert.equal(await page.locator('#password').inputValue(), '', 'password not echoed back');
      assert.equal(await page.locator('#username').getAttribute('aria-describedby'), 'form-error');
      note(`inline error: ${msg}`);
      note(await screenshot(page, `login-error.${width}`));
      if (device === PHONE) await checkPhoneLayout(page, 'sign-in page with error');
    });
    await check(`${width}: enrollment page screenshot and layout`, async () => {
      const r = await page.goto(enrollUrl);
      assert.equal(r.status(), 200);
      await page.locator('#passkey-enroll-button').waitFor({ state: 'visible' });
      const text = await bodyText(page);
      assert.match(text, /Create a passkey/);
      assert.match(text, /carol/);
      note(await screenshot(page, `enroll.${width}`));
      if (device === PHONE) await checkPhoneLayout(page, 'enrollment page');
    });
    if (device === PHONE) {
      await check('phone, dark mode: sign-in page screenshot', async () => {
        const { context: dark } = await newContext('screens-phone-dark', PHONE, { colorScheme: 'dark' });
        const p = await dark.newPage();
        await p.goto(authorizeUrl('screenshot-state'));
        await p.locator('#passkey-button').waitFor({ state: 'visible' });
        note(await screenshot(p, 'login-dark.phone'));
        await checkPhoneLayout(p, 'sign-in page (dark)');
        await dark.close();
      });
    }
    await context.close();
  }

  // -- The password sign-in answers its POST with the consent page (no redirect in between);
  //    the page gives its history entry its own address, so a reload asks for it again (GET)
  //    instead of sending the password form a second time.
  await check('password sign-in -> consent page in the answer; a reload asks for the page again', async () => {
    const { context } = await newContext('password-reload', DESKTOP);
    const page = await context.newPage();
    assert.equal((await page.goto(authorizeUrl('reload-state'))).status(), 200);
    await page.locator('#username').fill('alice');
    await page.locator('#password').fill(ALICE_PASSWORD);
    const [resp] = await Promise.all([
      page.waitForNavigation(),
      page.locator('#password-form button[type=submit]').click(),
    ]);
    assert.equal(resp?.request().method(), 'POST');
    assert.equal(resp?.status(), 200, 'the sign-in answers with the consent page');
    assert.ok((await bodyText(page)).includes(`Allow ${CLIENT_NAME}?`), 'consent page');
    assert.match(page.url(), /\/alexa\/authorize\?rid=[^&]+$/, `the page took its own address: ${page.url()}`);
    const again = await page.reload();
    assert.equal(again?.request().method(), 'GET', 'the reload does not post the password again');
    assert.equal(again?.status(), 200);
    assert.ok((await bodyText(page)).includes(`Allow ${CLIENT_NAME}?`), 'the consent page again');
    note(`reload: ${again?.request().method()} ${again?.url()}`);
    await context.close();
  });

  // -- e. A desktop app on the IPv6 loopback. A CSP source cannot name an IPv6 address, and
  //    Chromium holds a form's redirect to `form-action` too: the consent form's answer for
  //    this app is a page that goes on to it by itself, which the context answers here.
  await check('e. desktop app on http://[::1] -> password -> consent -> "Allow" -> its redirect URI gets a code it can exchange', async () => {
    const { context, appHits } = await newContext('loopback-v6', DESKTOP);
    const page = await context.newPage();
    const verifier = randomBytes(32).toString('base64url');
    const challenge = createHash('sha256').update(verifier).digest('base64url');
    const q = new URLSearchParams({
      client_id: 'desktop',
      response_type: 'code',
      redirect_uri: APP_V6,
      scope: 'openid',
      state: 'v6-state',
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    assert.equal((await page.goto(`${base}/t/${TENANT}/authorize?${q}`)).status(), 200);
    await page.locator('#username').fill('alice');
    await page.locator('#password').fill(ALICE_PASSWORD);
    await Promise.all([page.waitForNavigation(), page.locator('#password-form button[type=submit]').click()]);
    assert.ok((await bodyText(page)).includes('Allow Desktop app?'), `consent page: ${await bodyText(page)}`);
    const [toApp] = await Promise.all([
      page.waitForRequest((r) => r.isNavigationRequest() && r.url().startsWith(`${APP_V6}?`), { timeout: 10_000 }),
      page.locator('form.actions button[value=approve]').click({ noWaitAfter: true }),
    ]);
    const u = new URL(toApp.url());
    assert.equal(u.searchParams.get('state'), 'v6-state');
    const code = u.searchParams.get('code');
    assert.ok(code, `a code in ${u.href.replace(/code=[^&]+/, 'code=…')}`);
    await page.waitForURL((url) => url.href.startsWith(`${APP_V6}?`));
    assert.equal(appHits.length, 1, `the app was reached once: ${appHits.length}`);
    const r = await fetch(`${base}/t/${TENANT}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: APP_V6, client_id: 'desktop', code_verifier: verifier }).toString(),
    });
    const body = await r.json();
    assert.equal(r.status, 200, JSON.stringify(body));
    assert.ok(body.access_token, 'an access token');
    await context.close();
  });

  // -- a. Enrollment through the one-time link (phone: how a household member gets it).
  let credential = null;
  const enrolled = await step('a. enrollment link -> "Create a passkey" -> account page lists the passkey', async () => {
    const { context } = await newContext('enroll', PHONE);
    const page = await context.newPage();
    const credentials = await addAuthenticator(context, page);
    const r = await page.goto(enrollUrl);
    assert.equal(r.status(), 200);
    const button = page.locator('#passkey-enroll-button');
    await button.waitFor({ state: 'visible' });
    await page.locator('#passkey-name').fill(PASSKEY_NAME);
    await Promise.all([page.waitForURL(`${base}/t/${TENANT}/account**`), button.click()]);
    const text = await bodyText(page);
    note(`account page: ${text.replace(/\s+/g, ' ').slice(0, 400)}`);
    assert.match(text, /Your account/);
    assert.match(text, /Signed in as carol/);
    assert.ok(text.includes(PASSKEY_NAME), `the passkey is listed: ${text}`);
    assert.match(text, /not used yet/);
    assert.equal(await page.locator('#passkey-error').isVisible(), false, 'no passkey error shown');
    // A further passkey can be added from the account page.
    assert.equal(await page.locator('#passkey-add-button').isVisible(), true, 'the account page offers "Add a passkey"');
    await checkPhoneLayout(page, 'account page');
    note(await screenshot(page, 'account.phone'));

    const creds = await credentials();
    assert.equal(creds.length, 1, `one credential on the authenticator: ${JSON.stringify(creds.map((c) => c.credentialId))}`);
    const [c] = creds;
    assert.equal(c.isResidentCredential, true, 'the credential is resident (discoverable)');
    assert.equal(c.rpId, 'localhost', `RP ID ${c.rpId}`);
    assert.ok(c.userHandle, 'user handle stored with the credential');

    return { context, page, credentials };
  });

  credential = await step('b. "Sign out" on the account page -> the account page no longer shows carol', async () => {
    const { context, page, credentials } = enrolled;
    // The signed-out pages below start a conditional (autofill) passkey request, which the
    // virtual authenticator would answer at once, signing carol in again behind the test's back
    // and moving the server's signature counter past the one carried to the next browser. Take
    // the authenticator away first, and carry its counter as it is now.
    const [c] = await credentials();
    await credentials.remove();
    await Promise.all([page.waitForNavigation(), page.locator('form[action$="/logout"] button').click()]);
    note(`after sign-out: ${page.url()}: ${(await bodyText(page)).replace(/\s+/g, ' ').slice(0, 200)}`);
    const after = await page.goto(`${base}/t/${TENANT}/account`);
    assert.ok(!/Signed in as carol/.test(await bodyText(page)), `signed out: account page now ${after.status()} ${page.url()}`);
    await context.close();
    return c;
  });

  // -- d (part 2). The consent page at desktop width (no decision: the phone flow decides).
  const state = alexaState();
  assert.equal(state.length, 300);
  await check('desktop: passkey autofill (conditional mediation, no tap) -> consent page screenshot', async () => {
    const { context } = await newContext('consent-desktop', DESKTOP);
    const page = await context.newPage();
    // Carry the authenticator's signature counter to the next browser.
    credential = await passkeySignIn(context, page, authorizeUrl(state), credential, 'autofill');
    const text = await bodyText(page);
    assert.ok(text.includes(CLIENT_NAME) && text.includes('carol'), `consent page: ${text}`);
    note(await screenshot(page, 'consent.desktop'));
    await context.close();
  });

  // -- c. The Alexa account-linking flow on a phone, signing in with the discoverable passkey.
  const { code } = await step('c. Alexa authorize (300-char state) -> "Sign in with a passkey", no username -> consent', async () => {
    const { context } = await newContext('alexa', PHONE);
    const page = await context.newPage();
    credential = await passkeySignIn(context, page, authorizeUrl(state), credential, 'button');
    const text = await bodyText(page);
    note(`consent page: ${text.replace(/\s+/g, ' ')}`);
    assert.ok(text.includes(`Allow ${CLIENT_NAME}?`), `consent names the client: ${text}`);
    assert.match(text, /account\s+carol/, 'consent names the account being linked');
    for (const w of SCOPE_WORDS) assert.ok(text.includes(w), `consent shows "${w}": ${text}`);
    note(await screenshot(page, 'consent.phone'));
    await checkPhoneLayout(page, 'consent page');

    // The browser follows the 303 to Alexa's redirect URI. Playwright cannot intercept a
    // redirect's follow-up request, and name resolution is off for every host but localhost,
    // so the navigation is seen here and then fails without touching the network.
    const [toAlexa] = await Promise.all([
      page.waitForRequest((r) => r.isNavigationRequest() && r.url().startsWith(LAYLA)),
      page.locator('form.actions button[value=approve]').click({ noWaitAfter: true }),
    ]);
    const from = toAlexa.redirectedFrom();
    assert.ok(from && from.method() === 'POST' && from.url() === `${base}/alexa/authorize`, `a redirect from the consent form: ${from?.method()} ${from?.url()}`);
    const u = new URL(toAlexa.url());
    assert.equal(u.origin + u.pathname, LAYLA, 'redirected to the registered EU redirect URI');
    const code = u.searchParams.get('code');
    assert.ok(code, `code in ${u.href.replace(/code=[^&]+/, 'code=…')}`);
    assert.equal(u.searchParams.get('state'), state, 'state echoed exactly (300 characters)');
    assert.ok(!u.searchParams.get('error'), `no error: ${u.searchParams.get('error')}`);
    await context.close();
    return { code };
  });

  await step('c. POST /alexa/token with HTTP Basic, as Amazon does -> 200, tokens, integer expires_in', async () => {
    const basic = Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(client.client_secret)}`).toString('base64');
    const r = await fetch(`${base}/alexa/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${basic}`,
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: LAYLA, client_id: CLIENT_ID }).toString(),
      signal: AbortSignal.timeout(10_000),
    });
    const body = await r.text();
    assert.equal(r.status, 200, `token endpoint: ${r.status} ${body}`);
    const j = JSON.parse(body);
    assert.ok(typeof j.access_token === 'string' && j.access_token.length > 0, 'access_token');
    assert.ok(typeof j.refresh_token === 'string' && j.refresh_token.length > 0, 'refresh_token');
    assert.equal(j.token_type, 'Bearer');
    assert.ok(Number.isInteger(j.expires_in) && j.expires_in >= 360, `integer expires_in >= 360: ${j.expires_in}`);
    const claims = JSON.parse(Buffer.from(j.access_token.split('.')[1], 'base64url').toString());
    assert.equal(claims.client_id, CLIENT_ID);
    for (const s of SCOPE.split(' ')) assert.ok(String(claims.scope).split(' ').includes(s), `scope ${claims.scope}`);
    note(`access token claims: ${JSON.stringify(claims)}`);
  });

  await check('no JavaScript dialog, no pop-up, no uncaught error, no console error, no other origin', async () => {
    assert.deepEqual(incidents, []);
  });
}

let timer = null;
let exitCode = 1;
try {
  timer = setTimeout(() => {
    console.error(`\nbrowser test timed out after ${OVERALL_TIMEOUT_MS} ms`);
    console.error(`--- ma-idp log (tail) ---\n${serverLog.slice(-8_000)}`);
    cleanupSync();
    process.exit(1);
  }, OVERALL_TIMEOUT_MS);
  await main();
  exitCode = results.every((r) => r.ok) ? 0 : 1;
} catch (e) {
  if (!e?.reported) log(`  FAIL ${e?.stack || e}`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  await stopServer().catch(() => {});
  clearTimeout(timer);
}

const failed = results.filter((r) => !r.ok);
log('');
if (incidents.length) log(`incidents:\n  ${incidents.join('\n  ')}`);
for (const k of knownIssues) log(`  KNOWN ISSUE (not failed): ${k}`);
if (exitCode !== 0) {
  if (consoleLines.length) log(`browser console:\n  ${consoleLines.join('\n  ')}`);
  log(`--- ma-idp log (tail) ---\n${serverLog.slice(-8_000)}`);
}
log(`screenshots: ${SHOTS}`);
log(`${results.length - failed.length} passed, ${failed.length} failed`);
cleanupSync();
process.exit(exitCode);
