// The sluice dashboard in a real browser: Debian's chromium, driven by playwright-core (which
// brings no browser of its own; never run `npx playwright install`).
//
// Run by crates/sluice/tests/dashboard.rs against a real `sluice serve`, which it starts with
// an admin token and two domains: `api` (key `user`, 5 per minute) and `login` (key `ip`,
// 3 per minute, shadow mode). By hand:
//
//   SLUICE_CHROMIUM=$(command -v chromium) node dashboard.mjs \
//     --base http://127.0.0.1:8080 --token TOKEN [--disabled-base URL] [--screenshot out.png]
//
// --disabled-base is a second server without an admin token. The script prints one line per
// step and exits 0 when every check passed, 1 with the failing step, the page's state, its
// console and a screenshot (next to --screenshot, `-failure` added) otherwise. Every wait is
// bounded, and all of them together by BUDGET_MS.

import { chromium } from 'playwright-core';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' },
    token: { type: 'string' },
    'disabled-base': { type: 'string' },
    screenshot: { type: 'string', default: 'dashboard.png' },
  },
});
if (!opts.base || !opts.token) {
  console.error('usage: node dashboard.mjs --base URL --token TOKEN [--disabled-base URL] [--screenshot PATH]');
  process.exit(2);
}
const executablePath = process.env.SLUICE_CHROMIUM;
if (!executablePath) {
  console.error('SLUICE_CHROMIUM must name the chromium binary (e.g. $(command -v chromium))');
  process.exit(2);
}

/** All waits together, in milliseconds. */
const BUDGET_MS = 30_000;
/** The shortest the light load runs. */
const LOAD_MIN_MS = 6_000;
const started = Date.now();

/** Names this run's users, so that the script can run again against the same server. */
const RUN = Date.now().toString(36);
const MALLORY = `mallory-${RUN}`;
const TRENT = `trent-${RUN}`;

const XSS_SCRIPT = '<script>alert(1)</script>';
const XSS_IMG = '<img src=x onerror=alert(2)>';

const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);

/** A wait of at most `ms`, cut to what is left of the budget. */
function within(ms) {
  const left = BUDGET_MS - (Date.now() - started);
  if (left <= 0) throw new Error(`the ${BUDGET_MS / 1000} s budget for all waits is spent`);
  return Math.min(ms, left);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// ---- the public API, from Node --------------------------------------------------------------

async function checkRequest(domain, entries) {
  const response = await fetch(`${opts.base}/v1/check`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ domain, descriptors: [{ entries }] }),
    signal: AbortSignal.timeout(5000),
  });
  const body = await response.json().catch(() => null);
  if (response.status !== 200) throw new Error(`/v1/check answered ${response.status}: ${JSON.stringify(body)}`);
  return body;
}

const user = (value) => [{ key: 'user', value }];

/** Calls the admin API from Node, as another operator would while the page is open. */
async function adminRequest(method, path, body) {
  const response = await fetch(`${opts.base}/admin/v1${path}`, {
    method,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.token}` },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  if (!response.ok) throw new Error(`${method} /admin/v1${path} answered ${response.status}: ${await response.text()}`);
}

/** Checks `value` until its answer is `code`, at most `tries` times; returns the answers. */
async function checkUntil(value, code, tries) {
  const answers = [];
  for (let i = 0; i < tries; i++) {
    const answer = await checkRequest('api', user(value));
    answers.push(answer);
    if (answer.overall_code === code) return answers;
    await sleep(within(300));
  }
  throw new Error(`/v1/check for user=${value} never answered ${code} in ${tries} tries: ${JSON.stringify(answers)}`);
}

/**
 * Light load in the background: about 30 checks a second for at most `maxMs`, until stop().
 * Most go to many different users (allowed), one in four to the <script> user and one in ten
 * to the <img> user (over their limit after 5), one in six to the shadow-mode login domain.
 */
function startLoad(maxMs) {
  const counts = { OK: 0, OVER_LIMIT: 0, errors: 0, lastError: null };
  const begun = Date.now();
  let stopped = false;
  const until = Date.now() + maxMs;
  const worker = async (offset) => {
    for (let i = offset; !stopped && Date.now() < until && i < 2000; i += 2) {
      let domain = 'api';
      let entries;
      if (i % 6 === 5) {
        domain = 'login';
        entries = [{ key: 'ip', value: `client-${i % 4}` }];
      } else if (i % 4 === 0) entries = user(XSS_SCRIPT);
      else if (i % 10 === 1) entries = user(XSS_IMG);
      else entries = user(`load-${i % 97}`);
      try {
        const answer = await checkRequest(domain, entries);
        counts[answer.overall_code] = (counts[answer.overall_code] || 0) + 1;
      } catch (err) {
        counts.errors += 1;
        counts.lastError = String(err);
      }
      await sleep(60);
    }
  };
  const done = Promise.all([worker(0), worker(1)]);
  return {
    counts,
    started: begun,
    async stop() {
      stopped = true;
      await done;
      return counts;
    },
  };
}

// ---- the browser ----------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
  timeout: 20_000,
});
const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1 });
const page = await context.newPage();
page.setDefaultTimeout(10_000);

const dialogs = [];
const pageErrors = [];
const consoleLines = [];
page.on('dialog', (dialog) => {
  dialogs.push(`${dialog.type()}: ${dialog.message()}`);
  dialog.dismiss().catch(() => {});
});
page.on('pageerror', (err) => pageErrors.push(String(err)));
page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));

const testId = (id) => page.locator(`[data-testid="${id}"]`);
const text = async (id) => (await testId(id).textContent({ timeout: within(5000) })) ?? '';

/** Waits until `id`'s answer element says ok or error; fails on error, returns its text. */
async function answerOk(id, what) {
  const el = testId(id);
  await page.waitForFunction(
    (el) => el.dataset.state === 'ok' || el.dataset.state === 'error',
    await el.elementHandle({ timeout: within(5000) }),
    { timeout: within(5000) },
  );
  const [state, content] = await Promise.all([el.getAttribute('data-state'), el.textContent()]);
  check(state === 'ok', `${what}: the page shows an error: ${content}`);
  return content;
}

/** Waits until `id`'s answer element is reset (emptied) so a new answer can be told apart. */
async function clearAnswer(id) {
  await testId(id).evaluate((el) => {
    el.replaceChildren();
    delete el.dataset.state;
  });
}

/** No script or markup was injected, and nothing fired. */
async function assertNoInjection(where) {
  const found = await page.evaluate(() => ({
    scripts: document.querySelectorAll('script').length,
    imgs: document.querySelectorAll('img').length,
    iframes: document.querySelectorAll('iframe').length,
  }));
  check(found.scripts === 1, `${where}: ${found.scripts} script elements (the page has 1): markup was injected`);
  check(found.imgs === 0 && found.iframes === 0, `${where}: injected elements: ${JSON.stringify(found)}`);
  check(dialogs.length === 0, `${where}: dialogs fired: ${JSON.stringify(dialogs)}`);
}

let currentStep = 'launch';
let load = null;
const steps = [];

async function step(name, fn) {
  currentStep = name;
  const t0 = Date.now();
  await fn();
  steps.push(name);
  log(`ok   ${name} (${Date.now() - t0} ms)`);
}

try {
  log(`chromium ${browser.version()} from ${executablePath}`);

  if (opts['disabled-base']) {
    await step('without --admin-token the page says the admin API is disabled', async () => {
      await page.goto(`${opts['disabled-base']}/dashboard`, { timeout: within(10_000) });
      await testId('admin-disabled').waitFor({ state: 'visible', timeout: within(5000) });
      check(await testId('token-form').isHidden(), 'the token form is shown although the admin API is disabled');
      check((await testId('status').getAttribute('data-state')) === 'disabled', `status: ${await text('status')}`);
    });
  }

  await step('the page loads under its CSP and asks for the token', async () => {
    const response = await page.goto(`${opts.base}/dashboard`, { timeout: within(10_000) });
    check(response.status() === 200, `GET /dashboard answered ${response.status()}`);
    const csp = response.headers()['content-security-policy'] || '';
    check(csp.includes("default-src 'none'"), `no strict Content-Security-Policy on /dashboard: ${JSON.stringify(csp)}`);
    check((response.headers()['content-type'] || '').startsWith('text/html'), 'not served as text/html');
    await testId('token-form').waitFor({ state: 'visible', timeout: within(5000) });
    check(await page.locator('#app').isHidden(), 'the dashboard shows before a token is given');
  });

  await step('a wrong token shows the wrong-token state', async () => {
    await page.fill('#token-input', 'not-the-token');
    await page.click('#token-submit');
    await testId('auth-error').waitFor({ state: 'visible', timeout: within(5000) });
    const message = await text('auth-error');
    check(/wrong token/i.test(message) && message.includes('401'), `auth error says: ${message}`);
    check((await testId('status').getAttribute('data-state')) === 'unauthorized', `status: ${await text('status')}`);
    const stored = await page.evaluate(() => sessionStorage.getItem('sluice.adminToken'));
    check(stored === null, `a refused token stays in sessionStorage: ${stored}`);
  });

  await step('the right token opens the dashboard and stays in this tab only', async () => {
    await page.fill('#token-input', opts.token);
    await page.click('#token-submit');
    await page.locator('#app').waitFor({ state: 'visible', timeout: within(5000) });
    await page.waitForSelector('[data-testid="status"][data-state="live"]', { timeout: within(5000) });
    check(await testId('auth-error').isHidden(), 'the wrong-token message stays after a good token');
    const storage = await page.evaluate(() => ({
      session: sessionStorage.getItem('sluice.adminToken'),
      local: localStorage.length,
      cookie: document.cookie,
    }));
    check(storage.session === opts.token, 'the token is not in sessionStorage');
    check(storage.local === 0 && storage.cookie === '', `the token leaks beyond the tab: ${JSON.stringify(storage)}`);
  });

  await step('under load the live numbers change', async () => {
    const before = await text('tile-allowed-value');
    load = startLoad(15_000);
    await page.waitForFunction(
      (before) => {
        const now = document.querySelector('[data-testid="tile-allowed-value"]').textContent;
        return now !== before && now !== '–';
      },
      before,
      { timeout: within(10_000), polling: 200 },
    );
    const after = await text('tile-allowed-value');
    // Decisions per second in the last full second: above zero once a second of load passed.
    await page.waitForFunction(
      () => !/^(0|–)$/.test(document.querySelector('[data-testid="tile-rate-value"]').textContent),
      null,
      { timeout: within(5000), polling: 200 },
    );
    const limited = await page.waitForFunction(
      () => {
        const t = document.querySelector('[data-testid="tile-limited-value"]').textContent;
        return !/^(0|–)$/.test(t) && t;
      },
      null,
      { timeout: within(8000), polling: 200 },
    );
    await page.locator('[data-testid="chart"][data-domain="api"] polyline[data-series="allowed"]').waitFor({ timeout: within(3000) });
    // The per-limit series: a sparkline in the rules table.
    const perUser = page.locator('[data-testid="rule-row"][data-rule="api.user"]');
    await perUser.locator('[data-testid="rule-spark"] polyline[data-series="allowed"]').waitFor({ timeout: within(5000) });
    log(`     allowed tile ${before} -> ${after}, decisions/s ${await text('tile-rate-value')}, limited ${await limited.jsonValue()}, api.user ${await perUser.locator('[data-testid="rule-rate"]').textContent()}`);
  });

  await step('a key holding <script> shows as text in the hot keys and in a lookup', async () => {
    await page.waitForFunction(
      (needle) => [...document.querySelectorAll('[data-testid="hot-key"]')].some((td) => td.textContent.includes(needle)),
      XSS_SCRIPT,
      { timeout: within(10_000), polling: 250 },
    );
    const cells = await testId('hot-key').allTextContents();
    check(cells.some((c) => c.includes(XSS_SCRIPT)), `hot keys: ${JSON.stringify(cells)}`);
    await page.fill('#lookup-domain', 'api');
    await page.fill('#lookup-entries', `user=${XSS_SCRIPT}`);
    await clearAnswer('lookup-result');
    await page.click('#lookup-submit');
    await answerOk('lookup-result', 'lookup');
    const key = await text('lookup-key');
    check(key.includes(XSS_SCRIPT), `the lookup shows the key ${JSON.stringify(key)}, not the text ${XSS_SCRIPT}`);
    log(`     lookup: ${key} — ${await text('lookup-state')} — ${await text('lookup-explanation')}`);
    await assertNoInjection('after rendering <script> and <img> keys');
  });

  await step('an override set in the form (blocked) is obeyed by /v1/check', async () => {
    const first = await checkRequest('api', user(MALLORY));
    check(first.overall_code === 'OK', `mallory is refused before any override: ${JSON.stringify(first)}`);
    await page.fill('#override-domain', 'api');
    await page.fill('#override-entries', `user=${MALLORY}`);
    await page.selectOption('#override-action', 'blocked');
    await page.fill('#override-ttl', '1h');
    await page.fill('#override-reason', 'browser test <b>abuse</b>');
    await clearAnswer('override-result');
    await page.click('#override-submit');
    await answerOk('override-result', 'saving the blocked override');
    const row = page.locator('[data-testid="override-row"]', { hasText: `user=${MALLORY}` });
    await row.waitFor({ timeout: within(5000) });
    const rowText = await row.textContent();
    check(rowText.includes('blocked') && rowText.includes('browser test <b>abuse</b>'), `override row: ${rowText}`);
    // At most 3 more checks: with the 1 above, fewer than the rule's 5, so a refusal is the override's.
    const answers = await checkUntil(MALLORY, 'OVER_LIMIT', 3);
    log(`     mallory refused after ${answers.length} check(s)`);
  });

  await step('an override of 1 per hour set in the form is obeyed by /v1/check', async () => {
    await page.fill('#override-entries', `user=${TRENT}`);
    await page.selectOption('#override-action', 'limit');
    await page.fill('#override-rpu', '1');
    await page.selectOption('#override-unit', 'hour');
    await page.fill('#override-ttl', '');
    await page.fill('#override-reason', '');
    await clearAnswer('override-result');
    await page.click('#override-submit');
    await answerOk('override-result', 'saving the limit override');
    await page.locator('[data-testid="override-row"]', { hasText: `user=${TRENT}` }).waitFor({ timeout: within(5000) });
    // The rule allows 5 a minute: a refusal within 4 checks is the override's 1 an hour.
    const answers = await checkUntil(TRENT, 'OVER_LIMIT', 4);
    const allowed = answers.filter((a) => a.overall_code === 'OK').length;
    check(allowed === 1, `trent got ${allowed} allowed before the refusal, expected 1: ${JSON.stringify(answers)}`);
    log(`     trent: ${answers.map((a) => a.overall_code).join(', ')}; limit ${JSON.stringify(answers.at(-1).statuses?.[0]?.limit)}`);
  });

  await step('deleting an override from the list lifts it', async () => {
    const row = page.locator('[data-testid="override-row"]', { hasText: `user=${MALLORY}` });
    const button = row.locator('[data-testid="override-delete"]');
    await button.click();
    check((await button.textContent()) === 'Confirm delete', 'delete does not ask for a second click');
    // Another operator adds an override between the two clicks: the list re-renders, and the
    // armed delete must survive that (it once did not, and the second click only re-armed it).
    const other = { domain: 'api', entries: user(`other-${RUN}`) };
    await adminRequest('PUT', '/overrides', { ...other, action: 'unlimited' });
    await page.locator('[data-testid="override-row"]', { hasText: `user=other-${RUN}` }).waitFor({ timeout: within(5000) });
    check((await button.textContent()) === 'Confirm delete', 'a refresh of the list disarmed the delete');
    await adminRequest('DELETE', '/overrides', other);
    await clearAnswer('overrides-result');
    await button.click();
    await answerOk('overrides-result', 'deleting the override');
    await row.waitFor({ state: 'detached', timeout: within(5000) });
    const answers = await checkUntil(MALLORY, 'OK', 3);
    log(`     mallory allowed again after ${answers.length} check(s)`);
  });

  await step('the load ends with requests both allowed and limited', async () => {
    // At least LOAD_MIN_MS of load in all, so that it shows in the charts of the screenshot.
    await sleep(within(Math.max(0, LOAD_MIN_MS - (Date.now() - load.started))));
    const counts = await load.stop();
    load = null;
    log(`     load: ${JSON.stringify(counts)}`);
    check(counts.errors === 0, `load errors: ${counts.lastError}`);
    check(counts.OK > 0 && counts.OVER_LIMIT > 0, `the load was not mixed: ${JSON.stringify(counts)}`);
    // The shadow-mode limit's series shows what it would have refused (12 login checks
    // exhaust its 4 clients' 3 a minute; the load made dozens).
    await page
      .locator('[data-testid="rule-row"][data-rule="login.ip"] [data-testid="rule-spark"] polyline[data-series="shadow"]')
      .waitFor({ timeout: within(5000) });
  });

  await step('resetting a key from the form restores its quota', async () => {
    const before = await checkRequest('api', user(XSS_SCRIPT));
    check(before.overall_code === 'OVER_LIMIT', `the <script> user is not over its limit: ${JSON.stringify(before)}`);
    await page.fill('#lookup-domain', 'api');
    await page.fill('#lookup-entries', `user=${XSS_SCRIPT}`);
    await clearAnswer('reset-result');
    await page.click('#reset-submit');
    const said = await answerOk('reset-result', 'reset');
    const after = await checkRequest('api', user(XSS_SCRIPT));
    check(after.overall_code === 'OK', `after the reset the <script> user is still refused: ${JSON.stringify(after)}`);
    log(`     ${said}`);
  });

  await step('screenshot', async () => {
    await page.evaluate(() => window.scrollTo(0, 0));
    // One more refresh, so the tiles and the charts include everything above.
    const shown = await text('tile-allowed-value');
    await page
      .waitForFunction(
        (shown) => document.querySelector('[data-testid="tile-allowed-value"]').textContent !== shown,
        shown,
        { timeout: within(2500), polling: 100 },
      )
      .catch(() => {});
    await page.waitForTimeout(within(300));
    await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: within(10_000) });
    log(`     saved ${opts.screenshot}`);
  });

  await step('no dialog, script error or CSP violation the whole time', async () => {
    await assertNoInjection('at the end');
    check(pageErrors.length === 0, `page errors: ${JSON.stringify(pageErrors)}`);
    const csp = consoleLines.filter((l) => /Content Security Policy|Refused to/i.test(l));
    check(csp.length === 0, `CSP violations: ${JSON.stringify(csp)}`);
  });

  log(`passed: ${steps.length} steps in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await browser.close();
  process.exit(0);
} catch (err) {
  console.error(`\nFAILED at step "${currentStep}": ${err && err.stack ? err.stack : err}`);
  if (load) console.error(`load so far: ${JSON.stringify(load.counts)}`);
  try {
    console.error(`page: ${page.url()}`);
    console.error(`status: ${await page.locator('[data-testid="status"]').textContent({ timeout: 1000 })}`);
    const failure = opts.screenshot.replace(/(\.png)?$/, '-failure.png');
    await page.screenshot({ path: failure, fullPage: true, timeout: 5000 });
    console.error(`screenshot: ${failure}`);
  } catch (inner) {
    console.error(`(could not read the page: ${inner})`);
  }
  console.error(`dialogs: ${JSON.stringify(dialogs)}`);
  console.error(`page errors: ${JSON.stringify(pageErrors)}`);
  console.error(`console:\n  ${consoleLines.slice(-30).join('\n  ') || '(empty)'}`);
  await browser.close().catch(() => {});
  process.exit(1);
}
