// Real-browser test of ma-idp's admin UI: an operator's whole journey in headless Chromium
// (playwright-core, the system /usr/bin/chromium), clicking and typing by label and role.
//
//   1. the one-time setup link -> tenant slug/name, username, password twice -> the admin UI
//      as operator; the link then answers 404
//   2. Tenants: create a second tenant; open the first one (its dashboard)
//   3. Clients -> "Add Alexa skill" with a Vendor ID -> every value the page shows for Alexa's
//      account-linking form (Authorization URI, Access Token URI, Client ID, Secret,
//      Authentication Scheme, Scopes, Domain List, Default Access Token Expiration, redirect
//      URLs) -> the client's own page
//   4. Users: a member with a password
//   5. another person (a second browser context, phone): the Authorization URI read in 3 with
//      the Client ID, an Alexa redirect URL, a state and the scopes read in 3 -> sign in as the
//      member -> Allow -> the redirect to Amazon is caught (never reached) -> code; the code
//      is exchanged at the Access Token URI with the Client ID and Secret by the Authentication
//      Scheme shown (HTTP Basic) -> access and refresh tokens; one refresh works
//   6. Grants: the member's grant to the client -> Revoke -> confirm page -> Revoke -> the
//      refresh token from 5 answers invalid_grant
//   7. Sessions, Keys, Settings, the Audit log (and its Kind filter, and every tenant's log)
//   8. Sign out -> the sign-in page -> sign in again, by keyboard only (Tab, Enter)
//   9. phone width (390 px, mobile, with the same admin session): every page again, adding a
//      second Alexa skill, a confirm page; nothing may overflow sideways
//
// Screenshots (full page) of every admin page at 1280 px and 390 px go to
// tests/artifacts/screenshots/admin/<backend>/<page>.<desktop|phone>.png.
//
// It does not start ma-idp: tests/tests/admin_browser.rs starts it on a fresh database with no
// tenant and no operator and runs
//   ADMIN_JOURNEY_BASE=http://localhost:PORT ADMIN_JOURNEY_SETUP_PATH=/admin/setup/TOKEN \
//   ADMIN_JOURNEY_BACKEND=sqlite|postgres CHROMIUM=/usr/bin/chromium node tests/browser/admin-journey.mjs
// It prints one line `ADMIN_JOURNEY_RESULT {json}` with what it read and saw, which the Rust test
// checks against the server; BROWSER_TEST_VERBOSE=1 prints more.
//
// Exit code 0 only when every check passed.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

import { chromium } from 'playwright-core';

// ---------------------------------------------------------------------------------------------
// Settings

const BASE = (process.env.ADMIN_JOURNEY_BASE || '').replace(/\/$/, '');
const SETUP_PATH = process.env.ADMIN_JOURNEY_SETUP_PATH || '';
const BACKEND = (process.env.ADMIN_JOURNEY_BACKEND || 'sqlite').toLowerCase();
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OVERALL_TIMEOUT_MS = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 300_000);
const VERBOSE = process.env.BROWSER_TEST_VERBOSE === '1';
const SHOTS = fileURLToPath(new URL(`../artifacts/screenshots/admin/${BACKEND}/`, import.meta.url));

const TENANT = 'home';
const TENANT_NAME = 'Our home';
const TENANT2 = 'cabin';
const TENANT2_NAME = 'Lake cabin';
const OPERATOR = 'olivia';
const OPERATOR_PASSWORD = `op-${randomBytes(12).toString('base64url')}`;
const MEMBER = 'mia';
const MEMBER_NAME = 'Mia Example';
const MEMBER_PASSWORD = `member-${randomBytes(12).toString('base64url')}`;
const VENDOR = 'MKXZK47785HJ2';
const VENDOR2 = 'M2ABCDEFGHIJKL';
const PITANGUI = `https://pitangui.amazon.com/api/skill/link/${VENDOR}`;
const ALEXA_HOSTS = ['pitangui.amazon.com', 'layla.amazon.com', 'alexa.amazon.co.jp'];

const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const DESKTOP = { viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1, isMobile: false };

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // No name resolution except our own server: Alexa's redirect URL must never be reached.
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost',
];

// ---------------------------------------------------------------------------------------------
// Reporting (the same shape as passkeys.mjs)

const log = (...a) => console.log(...a);
const note = (...a) => {
  if (VERBOSE) log('       ', ...a);
};
const results = [];

/** A check that must pass for the journey to go on. */
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

/** A check whose failure is reported but does not stop the journey. */
async function check(name, fn) {
  try {
    await step(name, fn);
  } catch {
    // recorded
  }
}

// ---------------------------------------------------------------------------------------------
// The browser

let browser = null;
/** Problems seen by any page: dialogs, pop-ups, uncaught errors, console errors, stray requests. */
const incidents = [];
const consoleLines = [];
/** Every screenshot written, by name. */
const shots = [];
/** Phone-layout findings: pages whose buttons are under the 44 px touch target. */
const layout = [];

/**
 * A fresh context (its own cookies: another person, or another device) whose pages are
 * watched for dialogs, pop-ups, uncaught exceptions and console errors. It may reach only our
 * server; Alexa's redirect URLs are answered by a stub (they are caught before that anyway).
 */
async function newContext(label, device, extra = {}) {
  const context = await browser.newContext({ ...device, locale: 'en-US', ...extra });
  context.setDefaultTimeout(20_000);
  context.setDefaultNavigationTimeout(30_000);
  await context.route(
    (url) => url.origin !== BASE,
    async (route) => {
      const url = route.request().url();
      if (ALEXA_HOSTS.includes(new URL(url).hostname)) {
        await route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: '<!doctype html><title>Alexa (stub)</title>' });
        return;
      }
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
      // A document answered 404 on purpose (the used setup link) is logged as a failed resource.
      if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 404/.test(m.text())) {
        incidents.push(line);
      }
    });
  });
  return context;
}

const bodyText = async (page) => (await page.locator('body').innerText()).replace(/[ \t]+/g, ' ');
const mainText = async (page) => (await page.locator('main').innerText()).replace(/[ \t]+/g, ' ');

async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
  note(`screenshot ${path}`);
  return path;
}

/** Follow a link or submit a form by a click, and wait for the page it leads to. */
async function clickAndWait(page, locator, url) {
  await Promise.all([page.waitForURL(url), locator.click()]);
  await page.waitForLoadState('load');
}

/** The admin navigation bar ("Main"). */
const nav = (page, name) => page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true });

/**
 * Go to a page by its link in the navigation bar. When the current page has no navigation bar
 * (an error page after a failed check) the journey goes on by URL, and says so.
 */
async function navTo(page, name, url) {
  const link = nav(page, name);
  if (await link.count()) {
    await clickAndWait(page, link, url);
  } else {
    log(`       (no navigation bar on ${page.url()}: going to ${url} directly)`);
    const r = await page.goto(url);
    assert.equal(r.status(), 200, `${url} -> ${r.status()}`);
  }
}

/** The status message (flash) at the top of the page. */
async function flash(page) {
  const s = page.getByRole('status');
  await s.waitFor({ state: 'visible' });
  return (await s.innerText()).trim();
}

/** The first heading of the page. */
const h1 = async (page) => (await page.getByRole('heading', { level: 1 }).innerText()).trim();

/**
 * The rows of the table `table` as objects keyed by column header (visually hidden headers
 * included), cell text trimmed.
 */
async function tableRows(table) {
  return table.evaluate((t) => {
    const heads = [...t.querySelectorAll('thead th')].map((th) => th.textContent.trim());
    return [...t.querySelectorAll('tbody tr')].map((tr) => {
      const o = {};
      [...tr.children].forEach((td, i) => {
        o[heads[i] ?? `col${i}`] = td.textContent.trim();
      });
      return o;
    });
  });
}

/**
 * At phone width nothing may stick out sideways (tables scroll inside themselves), every
 * button is on screen, and touch targets under 44 px are noted.
 */
async function checkPhoneLayout(page, what) {
  const r = await page.evaluate(() => {
    const vw = window.innerWidth;
    const buttons = [...document.querySelectorAll('button, input[type=submit], a.button')]
      .filter((b) => b.offsetParent !== null)
      .map((b) => {
        const x = b.getBoundingClientRect();
        // A button inside a table that scrolls sideways is reached by scrolling the table.
        const inScroller = Boolean(b.closest('table'));
        return { text: b.textContent.trim(), left: x.left, right: x.right, height: x.height, inScroller };
      });
    const inputs = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
      .filter((b) => b.offsetParent !== null && !b.closest('table'))
      .map((b) => {
        const x = b.getBoundingClientRect();
        return { name: b.name || b.id || b.getAttribute('aria-label'), left: x.left, right: x.right };
      });
    return { scrollWidth: document.documentElement.scrollWidth, innerWidth: vw, buttons, inputs };
  });
  note(`${what}: scrollWidth ${r.scrollWidth}, innerWidth ${r.innerWidth}`);
  assert.ok(
    r.scrollWidth <= r.innerWidth && r.innerWidth <= PHONE.viewport.width,
    `${what} overflows at phone width: the page is ${r.scrollWidth}px wide in a ${r.innerWidth}px layout viewport (the phone is ${PHONE.viewport.width}px)`,
  );
  for (const b of r.buttons) {
    if (!b.inScroller) {
      assert.ok(b.left >= 0 && b.right <= r.innerWidth + 0.5, `${what}: button "${b.text}" is off screen [${b.left}..${b.right}]`);
    }
    assert.ok(b.height >= 44, `${what}: button "${b.text}" is ${b.height}px tall, under the 44px touch target`);
  }
  for (const i of r.inputs) {
    assert.ok(i.left >= 0 && i.right <= r.innerWidth + 0.5, `${what}: field "${i.name}" is off screen [${i.left}..${i.right}]`);
  }
}

/** POST a form to the token endpoint the way Amazon's servers do (HTTP Basic). */
async function tokenRequest(tokenUri, clientId, secret, form) {
  const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64');
  const r = await fetch(tokenUri, {
    method: 'POST',
    headers: {
      authorization: `Basic ${basic}`,
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    },
    body: new URLSearchParams(form).toString(),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: kept as text
  }
  return { status: r.status, json, text };
}

/** Read the Alexa account-linking values shown on the page, by their labels. */
async function readAlexaValues(page) {
  const val = (label) => page.getByLabel(label, { exact: true }).inputValue();
  const secretField = page.getByLabel('Your Secret', { exact: true });
  const values = {
    authorization_uri: await val('Your Web Authorization URI'),
    access_token_uri: await val('Access Token URI'),
    client_id: await val('Your Client ID'),
    secret: (await secretField.count()) && (await secretField.evaluate((e) => e.tagName)) === 'INPUT' ? await secretField.inputValue() : null,
    authentication_scheme: await val('Your Authentication Scheme'),
    scopes: await Promise.all((await page.getByLabel(/^Scope \d+$/).all()).map((l) => l.inputValue())),
    domain_list: await Promise.all((await page.getByLabel(/^Domain \d+$/).all()).map((l) => l.inputValue())),
    default_access_token_expiration: await val('Default Access Token Expiration Time (seconds)'),
    redirect_uris: await page
      .locator('p', { hasText: 'Registered Alexa redirect URLs' })
      .locator('code')
      .allInnerTexts(),
  };
  return values;
}

// ---------------------------------------------------------------------------------------------
// The journey

const out = {
  backend: BACKEND,
  tenant: TENANT,
  operator: OPERATOR,
  member: MEMBER,
  vendor: VENDOR,
  redirect_uri: PITANGUI,
};

async function main() {
  log(`ma-idp admin journey in Chromium — backend: ${BACKEND}, ${BASE}`);
  assert.ok(/^http:\/\/localhost:\d+$/.test(BASE), `ADMIN_JOURNEY_BASE must be http://localhost:PORT, not ${JSON.stringify(BASE)}`);
  assert.ok(/^\/admin\/setup\/[^/]+$/.test(SETUP_PATH), `ADMIN_JOURNEY_SETUP_PATH must be /admin/setup/TOKEN, not ${JSON.stringify(SETUP_PATH)}`);
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);

  browser = await step('launch headless Chromium', () =>
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 }),
  );
  log(`  Chromium ${browser.version()}`);

  // -- 0. The setup page at phone width (opening it does not use the link up).
  await check('phone: setup page screenshot and layout', async () => {
    const ctx = await newContext('setup-phone', PHONE);
    const page = await ctx.newPage();
    const r = await page.goto(BASE + SETUP_PATH);
    assert.equal(r.status(), 200);
    assert.equal(await h1(page), 'Set up ma-idp');
    await screenshot(page, 'setup.phone');
    await checkPhoneLayout(page, 'setup page');
    await ctx.close();
  });

  const admin = await newContext('admin', DESKTOP);
  const page = await admin.newPage();

  // -- 1. The one-time setup link.
  await step('1. setup link -> tenant, household name, username, password twice -> admin UI as operator', async () => {
    const r = await page.goto(BASE + SETUP_PATH);
    assert.equal(r.status(), 200, `GET setup link -> ${r.status()}`);
    assert.equal(await h1(page), 'Set up ma-idp');
    // No tenant exists: the form asks for the household's name too.
    await page.getByLabel(/^Tenant/).fill(TENANT);
    await page.getByLabel('Household name').fill(TENANT_NAME);
    await page.getByLabel('Your username').fill(OPERATOR);
    await page.getByLabel(/^Password \(/).fill(OPERATOR_PASSWORD);
    await page.getByLabel('Password again').fill(OPERATOR_PASSWORD);
    await screenshot(page, 'setup.desktop');
    await clickAndWait(page, page.getByRole('button', { name: 'Create operator account' }), `${BASE}/admin/tenants`);
    assert.match(await flash(page), /Your operator account is ready/);
    const top = await page.locator('header').innerText();
    assert.ok(top.includes(`${OPERATOR} (operator)`), `the top bar names the operator: ${top}`);
  });

  await step('1. the setup link works once: opening it again answers 404', async () => {
    const ctx = await newContext('setup-again', DESKTOP);
    const p = await ctx.newPage();
    const r = await p.goto(BASE + SETUP_PATH);
    assert.equal(r.status(), 404, `used setup link -> ${r.status()}`);
    await ctx.close();
  });

  // -- 2. Tenants.
  await step('2. Tenants: the setup tenant is listed; "New tenant" creates a second one', async () => {
    assert.equal(await h1(page), 'Tenants');
    let rows = await tableRows(page.locator('main table'));
    note(`tenants: ${JSON.stringify(rows)}`);
    assert.equal(rows.length, 1, `one tenant after setup: ${JSON.stringify(rows)}`);
    assert.ok(rows[0].Name.startsWith(TENANT_NAME) && rows[0].Slug === TENANT, JSON.stringify(rows[0]));
    out.issuer_listed = rows[0].Issuer;
    await screenshot(page, 'tenants.desktop');
    await page.getByLabel(/^Slug/).fill(TENANT2);
    await page.getByLabel('Name', { exact: true }).fill(TENANT2_NAME);
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${BASE}/admin/t/${TENANT2}` && r.request().method() === 'GET'),
      clickAndWait(page, page.getByRole('button', { name: 'Create tenant' }), `${BASE}/admin/t/${TENANT2}`),
    ]);
    out.new_tenant_dashboard_status = resp.status();
  });

  await check('2. the new tenant\'s dashboard says it was created', async () => {
    assert.equal(out.new_tenant_dashboard_status, 200, `GET /admin/t/${TENANT2} -> ${out.new_tenant_dashboard_status}: ${(await bodyText(page)).slice(0, 300)}`);
    assert.match(await flash(page), new RegExp(`Tenant ${TENANT2_NAME} created`));
    assert.equal(await h1(page), 'Dashboard');
  });

  await step('2. both tenants are listed; open the setup tenant', async () => {
    await navTo(page, 'Tenants', `${BASE}/admin/tenants`);
    const rows = await tableRows(page.locator('main table'));
    assert.deepEqual(rows.map((x) => x.Slug).sort(), [TENANT2, TENANT].sort(), JSON.stringify(rows));
    await clickAndWait(page, page.getByRole('link', { name: TENANT_NAME, exact: true }), `${BASE}/admin/t/${TENANT}`);
  });

  await check('2. the setup tenant\'s dashboard: 1 user, 0 clients, 0 grants, the issuer', async () => {
    await screenshot(page, 'dashboard.desktop');
    assert.equal(await h1(page), 'Dashboard', `the dashboard: ${(await bodyText(page)).slice(0, 300)}`);
    const text = await mainText(page);
    assert.match(text, /1\s+users/);
    assert.match(text, /0\s+clients/);
    assert.match(text, /0\s+active grants/);
    assert.ok(text.includes(`Issuer: ${BASE}/t/${TENANT}`), `dashboard shows the issuer: ${text}`);
  });

  // -- 3. Add Alexa skill.
  await step('3. Clients -> "Add Alexa skill" with the Vendor ID -> the account-linking values', async () => {
    await navTo(page, 'Clients', `${BASE}/admin/t/${TENANT}/clients`);
    assert.equal(await h1(page), 'Clients');
    assert.match(await mainText(page), /No clients yet/);
    await screenshot(page, 'clients.desktop');
    await page.getByLabel('Vendor ID').fill(VENDOR);
    await clickAndWait(page, page.getByRole('button', { name: 'Add Alexa skill' }), `${BASE}/admin/t/${TENANT}/clients/alexa`);
    assert.equal(await h1(page), 'Alexa skill added');
    assert.match(await mainText(page), /Copy the client secret now/);
    const v = await readAlexaValues(page);
    note(`Alexa values: ${JSON.stringify({ ...v, secret: v.secret ? '…' : v.secret })}`);
    assert.ok(v.secret && v.secret.length >= 20, 'the secret is shown once');
    // The generic client facts above the Alexa block agree with it.
    assert.equal(await page.getByLabel('Client ID', { exact: true }).inputValue(), v.client_id);
    assert.equal(await page.getByLabel('Client secret', { exact: true }).inputValue(), v.secret);
    out.alexa = v;
    await screenshot(page, 'alexa-values.desktop');
  });

  await step('3. the client page: the same values, the secret no longer shown', async () => {
    await clickAndWait(page, page.getByRole('link', { name: 'Open Alexa' }), new RegExp(`${BASE}/admin/t/${TENANT}/clients/[^/]+$`));
    assert.equal(await h1(page), 'Alexa');
    out.client_page_url = page.url();
    const v = await readAlexaValues(page);
    assert.equal(v.secret, null, 'no secret on the client page');
    assert.match(await page.locator('#ax-secret').innerText(), /shown once/);
    assert.deepEqual({ ...v, secret: out.alexa.secret }, out.alexa, 'the client page shows the same values');
    await screenshot(page, 'client.desktop');
  });

  // -- 4. A member.
  await step('4. Users -> "New user": a member with a password', async () => {
    await navTo(page, 'Users', `${BASE}/admin/t/${TENANT}/users`);
    assert.equal(await h1(page), 'Users');
    await screenshot(page, 'users.desktop');
    const form = page.locator('form', { has: page.getByRole('button', { name: 'Create user' }) });
    await form.getByLabel('Username').fill(MEMBER);
    await form.getByLabel(/^Name/).fill(MEMBER_NAME);
    await form.getByLabel(/^Password/).fill(MEMBER_PASSWORD);
    await form.getByLabel('Role').selectOption({ label: 'Member' });
    await clickAndWait(page, page.getByRole('button', { name: 'Create user' }), new RegExp(`${BASE}/admin/t/${TENANT}/users/[^/]+$`));
    assert.equal(await flash(page), `User ${MEMBER} created.`);
    assert.equal(await h1(page), MEMBER);
    const facts = await page.locator('dl.facts').innerText();
    assert.match(facts, new RegExp(`Name\\s+${MEMBER_NAME}`));
    assert.match(facts, /Role\s+member/);
    assert.match(facts, /Password\s+set/);
    out.member_id = (await page.locator('dl.facts code').innerText()).trim();
    out.member_page_url = page.url();
    await screenshot(page, 'user.desktop');
    await navTo(page, 'Users', `${BASE}/admin/t/${TENANT}/users`);
    const rows = await tableRows(page.locator('main table'));
    assert.deepEqual(rows.map((r) => [r.Username, r.Role]).sort(), [[MEMBER, 'member'], [OPERATOR, 'operator']]);
  });

  // -- 5. Another person links the account, with the values read in 3.
  const state = `st-${randomBytes(24).toString('base64url')}`;
  const { code } = await step('5. the member (another browser): Authorization URI -> sign in -> Allow -> redirect to Alexa with a code', async () => {
    const v = out.alexa;
    assert.ok(v.redirect_uris.includes(PITANGUI), `the page lists ${PITANGUI}: ${v.redirect_uris}`);
    const q = new URLSearchParams({
      response_type: 'code',
      client_id: v.client_id,
      redirect_uri: PITANGUI,
      state,
      scope: v.scopes.join(' '),
    });
    // Alexa encodes spaces as %20.
    const url = `${v.authorization_uri}?${q.toString().replace(/\+/g, '%20')}`;
    out.authorize_url = url;
    const ctx = await newContext('member', PHONE);
    const p = await ctx.newPage();
    const r = await p.goto(url);
    assert.equal(r.status(), 200, `GET ${url} -> ${r.status()}`);
    assert.equal(new URL(p.url()).origin, BASE);
    await p.getByLabel('Username').fill(MEMBER);
    await p.getByLabel('Password').fill(MEMBER_PASSWORD);
    await p.getByRole('button', { name: 'Sign in', exact: true }).click();
    const allow = p.getByRole('button', { name: 'Allow', exact: true });
    await allow.waitFor({ state: 'visible' });
    const consent = await bodyText(p);
    note(`consent page: ${consent.replace(/\s+/g, ' ')}`);
    assert.ok(consent.includes(MEMBER), `the consent page names the account: ${consent}`);
    // The browser follows the redirect to Amazon; the request is seen here and then fails
    // without touching the network (no name resolution but localhost).
    const [toAlexa] = await Promise.all([
      p.waitForRequest((req) => req.isNavigationRequest() && req.url().startsWith(PITANGUI)),
      allow.click({ noWaitAfter: true }),
    ]);
    const from = toAlexa.redirectedFrom();
    assert.ok(from && from.method() === 'POST' && new URL(from.url()).origin === BASE, `a redirect from our consent form: ${from?.method()} ${from?.url()}`);
    const u = new URL(toAlexa.url());
    assert.equal(u.origin + u.pathname, PITANGUI);
    assert.equal(u.searchParams.get('error'), null, `no error: ${u.href}`);
    assert.equal(u.searchParams.get('state'), state, 'state echoed exactly');
    const code = u.searchParams.get('code');
    assert.ok(code, `a code in ${u.href}`);
    out.state_returned = u.searchParams.get('state');
    await ctx.close();
    return { code };
  });

  await step('5. the code at the Access Token URI with Client ID + Secret by HTTP Basic -> access and refresh tokens', async () => {
    const v = out.alexa;
    assert.match(v.authentication_scheme, /^HTTP Basic/, 'the page says HTTP Basic');
    const r = await tokenRequest(v.access_token_uri, v.client_id, v.secret, {
      grant_type: 'authorization_code',
      code,
      redirect_uri: PITANGUI,
    });
    assert.equal(r.status, 200, `token endpoint: ${r.status} ${r.text}`);
    const j = r.json;
    assert.ok(typeof j.access_token === 'string' && j.access_token.length > 0, 'access_token');
    assert.ok(typeof j.refresh_token === 'string' && j.refresh_token.length > 0, 'refresh_token');
    out.exchange = { status: r.status, token_type: j.token_type, expires_in: j.expires_in, scope: j.scope ?? null };
    out.access_token = j.access_token;
    out.refresh_token_1 = j.refresh_token;
  });

  await step('5. the refresh token works (before revocation) -> a new refresh token', async () => {
    const v = out.alexa;
    const r = await tokenRequest(v.access_token_uri, v.client_id, v.secret, {
      grant_type: 'refresh_token',
      refresh_token: out.refresh_token_1,
    });
    assert.equal(r.status, 200, `refresh: ${r.status} ${r.text}`);
    assert.ok(r.json.refresh_token, 'a new refresh token');
    out.refresh_before = { status: r.status, rotated: r.json.refresh_token !== out.refresh_token_1 };
    out.refresh_token = r.json.refresh_token;
  });

  // -- 6. Revoke the grant.
  await check('6. the dashboard counts the member, the client and the grant', async () => {
    await navTo(page, 'Dashboard', `${BASE}/admin/t/${TENANT}`);
    assert.equal(await h1(page), 'Dashboard', `the dashboard: ${(await bodyText(page)).slice(0, 300)}`);
    const dash = await mainText(page);
    assert.match(dash, /2\s+users/);
    assert.match(dash, /1\s+clients/);
    assert.match(dash, /1\s+active grants/);
  });

  await step('6. Grants: the member\'s grant to the Alexa client -> Revoke -> confirm page -> Revoke', async () => {
    await navTo(page, 'Grants', `${BASE}/admin/t/${TENANT}/grants`);
    assert.equal(await h1(page), 'Grants');
    const rows = await tableRows(page.locator('main table'));
    note(`grants: ${JSON.stringify(rows)}`);
    assert.equal(rows.length, 1, JSON.stringify(rows));
    out.grant_row = rows[0];
    await screenshot(page, 'grants.desktop');
    const row = page.getByRole('row').filter({ hasText: MEMBER }).filter({ hasText: 'Alexa' });
    await clickAndWait(page, row.getByRole('button', { name: 'Revoke' }), /\/grants\/[^/]+\/revoke$/);
    assert.equal(await h1(page), 'Please confirm');
    const question = await mainText(page);
    assert.match(question, /Revoke this grant\?/);
    out.confirm_question = question.split('\n').find((l) => l.includes('Revoke this grant')) ?? question;
    await screenshot(page, 'confirm.desktop');
    await clickAndWait(page, page.getByRole('button', { name: 'Revoke', exact: true }), `${BASE}/admin/t/${TENANT}/grants`);
    const msg = await flash(page);
    assert.match(msg, /^Grant revoked\./);
    out.revoke_flash = msg;
    const after = await tableRows(page.locator('main table'));
    assert.deepEqual(after.map((r) => Object.values(r)[0]), ['No active grants.']);
  });

  await step('6. after revocation the refresh token answers invalid_grant', async () => {
    const v = out.alexa;
    const r = await tokenRequest(v.access_token_uri, v.client_id, v.secret, {
      grant_type: 'refresh_token',
      refresh_token: out.refresh_token,
    });
    note(`refresh after revocation: ${r.status} ${r.text}`);
    out.refresh_after = { status: r.status, error: r.json?.error ?? null };
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json?.error, 'invalid_grant', r.text);
  });

  // -- 7. The other pages, and the audit log.
  await step('7. Sessions: the member\'s browser session is listed', async () => {
    await navTo(page, 'Sessions', `${BASE}/admin/t/${TENANT}/sessions`);
    assert.equal(await h1(page), 'Sessions');
    const rows = await tableRows(page.locator('main table'));
    note(`sessions: ${JSON.stringify(rows)}`);
    assert.ok(rows.some((r) => r.Account === MEMBER), `a session of ${MEMBER}: ${JSON.stringify(rows)}`);
    await screenshot(page, 'sessions.desktop');
  });

  await step('7. Keys: the tenant\'s signing keys', async () => {
    await navTo(page, 'Keys', `${BASE}/admin/t/${TENANT}/keys`);
    assert.equal(await h1(page), 'Signing keys');
    const rows = await tableRows(page.locator('main table'));
    note(`keys: ${JSON.stringify(rows)}`);
    assert.ok(rows.length >= 1, 'at least one key');
    out.kids = rows.map((r) => r['Key ID (kid)']);
    await screenshot(page, 'keys.desktop');
  });

  await step('7. Settings: the tenant\'s name and lifetimes', async () => {
    await navTo(page, 'Settings', `${BASE}/admin/t/${TENANT}/settings`);
    assert.equal(await h1(page), 'Settings');
    assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), TENANT_NAME);
    out.settings_access_token_ttl = await page.getByLabel('Access-token lifetime (seconds)').inputValue();
    await screenshot(page, 'settings.desktop');
  });

  await step('7. Audit log: every step of the journey, the revocation by the admin', async () => {
    await navTo(page, 'Audit log', `${BASE}/admin/t/${TENANT}/audit`);
    assert.equal(await h1(page), 'Audit log');
    const rows = await tableRows(page.locator('main table.audit'));
    out.audit = rows.map((r) => ({ kind: r.Event, outcome: r.Outcome, actor: r.Actor, user: r.User, client: r.Client }));
    note(`audit: ${JSON.stringify(out.audit)}`);
    out.audit_total = (await page.locator('.pager').innerText()).trim();
    await screenshot(page, 'audit.desktop');
    // The Kind filter, by keyboard-free selection of the option and the Filter button.
    await page.getByLabel('Kind').selectOption('grant_revoked');
    await clickAndWait(page, page.getByRole('button', { name: 'Filter' }), /kind=grant_revoked/);
    const filtered = await tableRows(page.locator('main table.audit'));
    out.audit_grant_revoked = filtered.map((r) => ({ kind: r.Event, outcome: r.Outcome, actor: r.Actor, user: r.User, client: r.Client }));
    await screenshot(page, 'audit-filtered.desktop');
  });

  await step('7. every tenant\'s audit log (operators): the second tenant\'s creation', async () => {
    await navTo(page, 'Tenants', `${BASE}/admin/tenants`);
    await clickAndWait(page, page.getByRole('link', { name: 'Audit log of every tenant' }), `${BASE}/admin/audit`);
    assert.match(await h1(page), /every tenant/);
    const rows = await tableRows(page.locator('main table.audit'));
    out.audit_all = rows.map((r) => ({ tenant: r.Tenant, kind: r.Event, outcome: r.Outcome, actor: r.Actor, user: r.User }));
    await screenshot(page, 'audit-all.desktop');
  });

  // -- 8. Sign out and in again.
  await step('8. Sign out -> the admin sign-in page -> sign in again by keyboard (Tab, Enter)', async () => {
    await clickAndWait(page, page.getByRole('button', { name: 'Sign out' }), `${BASE}/admin/login`);
    assert.equal(await h1(page), 'Admin sign-in');
    const r = await page.goto(`${BASE}/admin/t/${TENANT}`);
    assert.ok(!page.url().startsWith(`${BASE}/admin/t/`) || r.status() >= 400, `signed out: ${r.status()} ${page.url()}`);
    if (!page.url().startsWith(`${BASE}/admin/login`)) await page.goto(`${BASE}/admin/login`);
    await screenshot(page, 'login.desktop');
    // By keyboard only: type, Tab from field to field, Enter submits.
    const focused = () => page.evaluate(() => document.activeElement?.id ?? null);
    await page.getByLabel('Household (tenant)').fill(TENANT);
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'username', 'Tab goes from the household to the username');
    await page.keyboard.type(OPERATOR);
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'password', 'Tab goes from the username to the password');
    await page.keyboard.type(OPERATOR_PASSWORD);
    await Promise.all([page.waitForURL(`${BASE}/admin/tenants`), page.keyboard.press('Enter')]);
    assert.equal(await h1(page), 'Tenants');
  });

  // -- 9. The same pages on a phone, signed in as the same operator.
  await step('9. phone (390 px): every admin page, no sideways overflow, screenshots', async () => {
    const state = await admin.storageState();
    const ctx = await newContext('admin-phone', PHONE, { storageState: state });
    const p = await ctx.newPage();
    const t = `${BASE}/admin/t/${TENANT}`;
    const pages = [
      ['tenants', `${BASE}/admin/tenants`, 'Tenants'],
      ['dashboard', t, 'Dashboard'],
      ['users', `${t}/users`, 'Users'],
      ['user', out.member_page_url, MEMBER],
      ['clients', `${t}/clients`, 'Clients'],
      ['client', out.client_page_url, 'Alexa'],
      ['grants', `${t}/grants`, 'Grants'],
      ['sessions', `${t}/sessions`, 'Sessions'],
      ['keys', `${t}/keys`, 'Signing keys'],
      ['audit', `${t}/audit`, 'Audit log'],
      ['settings', `${t}/settings`, 'Settings'],
    ];
    const problems = [];
    for (const [name, url, title] of pages) {
      try {
        const r = await p.goto(url);
        await screenshot(p, `${name}.phone`);
        assert.equal(r.status(), 200, `${url} -> ${r.status()}`);
        assert.equal(await h1(p), title);
        await checkPhoneLayout(p, `${name} page`);
      } catch (e) {
        problems.push(e.message);
      }
    }
    // "Add Alexa skill" on the phone (a second skill) -> the values page.
    await p.goto(`${t}/clients`);
    await p.getByLabel('Vendor ID').fill(VENDOR2);
    await p.getByLabel('Name (optional)').fill('Kitchen Echo');
    await clickAndWait(p, p.getByRole('button', { name: 'Add Alexa skill' }), `${t}/clients/alexa`);
    assert.equal(await h1(p), 'Alexa skill added');
    const v2 = await readAlexaValues(p);
    assert.ok(v2.secret, 'a secret for the second skill');
    assert.notEqual(v2.client_id, out.alexa.client_id, 'a new client id');
    out.alexa2 = { client_id: v2.client_id, redirect_uris: v2.redirect_uris };
    await screenshot(p, 'alexa-values.phone');
    try {
      await checkPhoneLayout(p, 'Alexa values page');
    } catch (e) {
      problems.push(e.message);
    }
    // A confirm page (Rotate keys), then Cancel: nothing rotates.
    await p.goto(`${t}/keys`);
    await clickAndWait(p, p.getByRole('button', { name: 'Rotate keys' }), `${t}/keys/rotate`);
    assert.equal(await h1(p), 'Please confirm');
    await screenshot(p, 'confirm.phone');
    try {
      await checkPhoneLayout(p, 'confirm page');
    } catch (e) {
      problems.push(e.message);
    }
    await clickAndWait(p, p.getByRole('link', { name: 'Cancel' }), /\/admin\//);
    await ctx.close();
    // The sign-in page, signed out.
    const anon = await newContext('login-phone', PHONE);
    const lp = await anon.newPage();
    const r = await lp.goto(`${BASE}/admin/login`);
    assert.equal(r.status(), 200);
    await screenshot(lp, 'login.phone');
    try {
      await checkPhoneLayout(lp, 'sign-in page');
    } catch (e) {
      problems.push(e.message);
    }
    await anon.close();
    assert.deepEqual(problems, [], 'phone layout problems');
  });

  await step('9. rotating nothing: the keys are the same after Cancel', async () => {
    await page.goto(`${BASE}/admin/t/${TENANT}/keys`);
    const rows = await tableRows(page.locator('main table'));
    assert.deepEqual(rows.map((r) => r['Key ID (kid)']), out.kids);
  });

  await check('no JavaScript dialog, no pop-up, no uncaught error, no console error, no other origin', async () => {
    assert.deepEqual(incidents, []);
  });
}

let timer = null;
let exitCode = 1;
try {
  timer = setTimeout(() => {
    console.error(`\nadmin journey timed out after ${OVERALL_TIMEOUT_MS} ms`);
    process.exit(1);
  }, OVERALL_TIMEOUT_MS);
  await main();
  exitCode = results.every((r) => r.ok) ? 0 : 1;
} catch (e) {
  if (!e?.reported) log(`  FAIL ${e?.stack || e}`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  clearTimeout(timer);
}

const failed = results.filter((r) => !r.ok);
out.screenshots = shots;
out.steps = results.map((r) => ({ name: r.name, ok: r.ok }));
out.incidents = incidents;
log('');
if (incidents.length) log(`incidents:\n  ${incidents.join('\n  ')}`);
if (exitCode !== 0 && consoleLines.length) log(`browser console:\n  ${consoleLines.join('\n  ')}`);
log(`screenshots: ${SHOTS}`);
log(`${results.length - failed.length} passed, ${failed.length} failed`);
log(`ADMIN_JOURNEY_RESULT ${JSON.stringify(out)}`);
process.exit(exitCode);
