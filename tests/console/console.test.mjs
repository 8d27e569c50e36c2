// End-to-end test of the console (/ui) in a real browser: Debian's Chromium driven by
// Playwright's client, against the real binary with its demo shop and two tokens.
// Run: npm ci && npm test (in tests/console), after `cargo build`.
// SAGA_BIN: the binary (default target/debug/saga-orchestrator); CONSOLE_SHOTS: where the
// screenshots go (default target/console); CHROMIUM: the browser (default /usr/bin/chromium).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const root = new URL('../../', import.meta.url).pathname;
const BIN = process.env.SAGA_BIN || join(root, 'target/debug/saga-orchestrator');
const SHOTS = process.env.CONSOLE_SHOTS || join(root, 'target/console');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TOKENS = { ops: 'console-test-ops-token', viewer: 'console-test-viewer-token' };

const XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>';

const sha256 = (s) => createHash('sha256').update(s).digest('hex');

/** Polls `check` until it answers truthy, or fails after `ms` with `what`. */
async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The binary on a free loopback port with the demo shop; answers its base URL. */
async function startService(dir) {
  const config = join(dir, 'console.toml');
  writeFileSync(config, `
[server]
bind = "127.0.0.1:0"

[database]
url = "sqlite://${dir}/console.db?mode=rwc"

[demo]
enabled = true

[tracing]
trace_url = "https://tempo.example/trace/{trace_id}"

[participant]
allow = ["127.0.0.1"]

[[auth.tokens]]
name = "ops"
sha256 = "${sha256(TOKENS.ops)}"
scopes = ["read", "write", "admin"]

[[auth.tokens]]
name = "viewer"
sha256 = "${sha256(TOKENS.viewer)}"
scopes = ["read"]
`);
  const child = spawn(BIN, ['--config', config, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'] });
  after(() => child.kill('SIGTERM'));
  let out = '';
  child.stdout.on('data', (b) => { out += b; });
  child.stderr.on('data', (b) => { out += b; });
  const bound = await until('the service to listen', () => {
    if (child.exitCode !== null) throw new Error(`the service exited: ${out}`);
    const m = out.match(/"bound":"([^"]+)"/);
    return m && m[1];
  });
  return `http://${bound}`;
}

test('an operator finds a stuck saga, understands it and fixes it in the console', { timeout: 150000 }, async () => {
  mkdirSync(SHOTS, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'saga-console-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const base = await startService(dir);
  const demo = `${base}/demo`;

  const call = async (method, path, body, token = TOKENS.ops) => {
    const res = await fetch(base + path, {
      method,
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  };
  const status = async (id) => (await call('GET', `/v1/sagas/${id}`)).body.status;
  const order = (id, extra) => ({
    id, name: 'place_order',
    payload: { order_id: id, user_id: 42, sku: 'A1', qty: 1, amount: 30 },
    steps: [
      { name: 'order', action: { url: `${demo}/orders/create` }, compensation: { url: `${demo}/orders/cancel` } },
      { name: 'stock', action: { url: `${demo}/stock/deduct` }, compensation: { url: `${demo}/stock/refund`, ...extra.refund } },
      { name: 'balance', action: { url: `${demo}/balance/deduct`, ...extra.balance } },
    ],
  });

  // The balance's confirm is broken: the TCC saga's confirms use up their retries.
  assert.equal((await call('POST', '/demo/faults', { 'balance/commit': 503 })).status, 200);
  const started = [
    // Its payload carries markup: the console must show it as text.
    await call('POST', '/v1/sagas?wait_ms=10000', { ...order('order-1001', {}), payload: { ...order('order-1001', {}).payload, note: XSS } }),
    // Refused by the balance; its stock refund waits 10 minutes (a pending timer).
    await call('POST', '/v1/sagas', order('order-1002', { balance: { body: { refuse: true } }, refund: { delay_ms: 600000 } })),
    await call('POST', '/v1/sagas', {
      id: 'order-1003', name: 'reserve_funds', mode: 'tcc',
      payload: { user_id: 7, amount: 120 },
      steps: [
        ['buyer', [], { user_id: 7, amount: 120 }],
        ['fee', [], { user_id: 8, amount: 5 }],
        ['seller', ['buyer', 'fee'], { user_id: 9, amount: 1 }],
      ].map(([name, after, body]) => ({
        name, depends_on: after,
        try: { url: `${demo}/balance/reserve`, body },
        confirm: { url: `${demo}/balance/commit`, body },
        cancel: { url: `${demo}/balance/release`, body },
        retry: { max_attempts: 2, initial_backoff_ms: 50, max_backoff_ms: 100 },
      })),
    }),
  ];
  assert.deepEqual(started.map((r) => r.status), [201, 201, 201], JSON.stringify(started.map((r) => r.body)));
  assert.equal(started[0].body.status, 'succeeded');
  await until('order-1002 to wait for its delayed refund', async () => (await status('order-1002')) === 'compensating'
    && (await call('GET', '/v1/sagas/order-1002')).body.steps[1].status === 'compensation_scheduled');
  await until('order-1003 to be stuck', async () => (await status('order-1003')) === 'stuck');

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    // A closed network: no background connections, no component updates, no QUIC.
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // The browser logs the answers the test provokes (no token yet: 401; an unknown id: 404; a
  // retry answered 503; a bad cursor: 400).
  const expected = /^Failed to load resource: the server responded with a status of (400|401|404|503)/;
  page.on('console', (m) => { if (m.type() === 'error' && !expected.test(m.text())) problems.push(`console: ${m.text()}`); });
  // No "null" or "undefined" rendered as text (a missing value drawn by mistake); payloads in
  // <pre> may hold a JSON null and are left out.
  const noStrayText = async (where) => {
    const stray = await page.evaluate(() => {
      const found = [];
      const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      for (let n = walk.nextNode(); n; n = walk.nextNode()) {
        if (n.parentElement.closest('pre, script, style')) continue;
        if (/\b(null|undefined|NaN)\b/.test(n.textContent)) found.push(`${n.parentElement.tagName}: ${n.textContent}`);
      }
      return found;
    });
    assert.deepEqual(stray, [], `stray text on ${where}`);
  };

  // The service has tokens: the console asks for one. A read-only token first.
  await page.goto(`${base}/ui`);
  const tokenDialog = page.locator('#token-dialog');
  await tokenDialog.waitFor({ state: 'visible' });
  await page.fill('#token-input', TOKENS.viewer);
  await page.press('#token-input', 'Enter');
  await page.locator('#who', { hasText: 'viewer · read' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('saga-console-token')), TOKENS.viewer);
  assert.equal(await page.evaluate(() => localStorage.getItem('saga-console-token')), null, 'the token stays in the session');

  // The list: newest first, counts per status with stuck highlighted.
  const rowIds = () => page.locator('table.sagas .id').allTextContents();
  await until('three sagas listed', async () => (await rowIds()).length === 3);
  assert.deepEqual(await rowIds(), ['order-1003', 'order-1002', 'order-1001']);
  const stuckChip = page.getByRole('button', { name: 'stuck: 1' });
  await stuckChip.waitFor();
  assert.match(await stuckChip.getAttribute('class'), /\balarm\b/);
  await page.getByRole('button', { name: 'all: 3' }).waitFor();
  await noStrayText('the list');
  await page.screenshot({ path: join(SHOTS, 'list.png') });

  // Filter to stuck, with the keyboard: the filter goes into the URL, focus stays on the chip,
  // and the list keeps the filter across a reload.
  await stuckChip.focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/ui\?status=stuck$/);
  await until('only the stuck saga listed', async () => JSON.stringify(await rowIds()) === '["order-1003"]');
  await page.locator('button.chip[aria-label="stuck: 1"][aria-pressed="true"]').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'stuck: 1');
  await page.reload();
  await until('the filter kept after a reload', async () => JSON.stringify(await rowIds()) === '["order-1003"]');
  await page.getByRole('button', { name: 'compensating: 1' }).click();
  await page.waitForURL(/status=compensating%2Cstuck|status=compensating,stuck/);
  await until('stuck and compensating listed', async () => JSON.stringify(await rowIds()) === '["order-1003","order-1002"]');
  // The name filter, typed: the list follows, the box keeps focus.
  await page.click('#name-filter');
  await page.keyboard.type('place_order');
  await until('the name filter applied', async () => JSON.stringify(await rowIds()) === '["order-1002"]');
  assert.match(page.url(), /name=place_order/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'name-filter');
  await page.fill('#name-filter', '');
  await until('the name filter cleared', async () => JSON.stringify(await rowIds()) === '["order-1003","order-1002"]');

  // Open the stuck saga.
  await page.getByRole('link', { name: 'order-1003' }).click();
  await page.waitForURL(/\/ui\/sagas\/order-1003$/);
  await page.locator('h1 .badge', { hasText: 'stuck' }).waitFor();
  // Its timeline: a graph of depends_on, two levels.
  const levels = page.locator('.timeline.graph > li.level');
  assert.equal(await levels.count(), 2);
  assert.deepEqual(await levels.nth(0).locator('h3').allTextContents(), ['buyer', 'fee']);
  assert.deepEqual(await levels.nth(1).locator('h3').allTextContents(), ['seller']);
  const seller = page.locator('article.step[aria-label="step seller"]');
  assert.match(await seller.innerText(), /After\s+buyer, fee/);
  assert.match(await seller.innerText(), /Phase\s+confirm/);
  // The saga is stuck as soon as one confirm has used up its retries; the others wait for the
  // operator's retry.
  const api1003 = (await call('GET', '/v1/sagas/order-1003?include=attempts')).body;
  assert.equal(await page.locator('p.saga-error').innerText(), api1003.error);
  assert.match(api1003.error, /: confirm gave up after 2 attempts: 503 from /);
  const stuckSteps = api1003.steps.filter((x) => x.stuck).map((x) => x.name);
  assert.ok(stuckSteps.length >= 1);
  assert.deepEqual(await page.locator('article.step.alarm h3').allTextContents(), stuckSteps);
  assert.match(await page.locator(`article.step[aria-label="step ${stuckSteps[0]}"] .step-error`).innerText(), /503 from .*fault injected/);
  // The other confirms' retries wait for the operator, unless they too used theirs up at once.
  if (api1003.steps.some((x) => x.next_attempt_at)) {
    assert.match(await page.locator('section.timers').innerText(), /held until an operator retries/);
  } else {
    assert.equal(await page.locator('section.timers').count(), 0);
  }
  // Its calls, as the API records them: every try succeeded, every confirm answered 503.
  const recorded = api1003.steps.flatMap((x) => x.history.map((c) => [x.name, c.phase, `#${c.attempt}`, String(c.http_status)]));
  const shown = [];
  for (const row of await page.locator('table.calls tbody tr').all()) {
    const td = await row.locator('td').allInnerTexts();
    shown.push(td);
    assert.match(td[0], /(^|\s)\d\d:\d\d:\d\d\.\d{3}$/); // with the date after midnight
    assert.deepEqual(td.slice(5, 6), [td[2] === 'try' ? 'success' : 'unknown']);
    assert.match(td[6], /^\d+ ms$/);
    if (td[2] === 'confirm') assert.match(td[7], /^503 from /);
  }
  assert.deepEqual(shown.map((td) => td.slice(1, 5)).sort(), recorded.sort());
  assert.equal(shown.filter((td) => td[2] === 'try').length, 3);
  // The payload, pretty-printed.
  assert.match(await page.locator('pre.json').first().innerText(), /^\{\n {2}"amount": 120,\n {2}"user_id": 7\n\}$/);

  // A read-only token cannot retry, and is told why.
  const retry = page.locator('#action-retry');
  assert.equal(await retry.isDisabled(), true);
  assert.match(await page.locator('#why-retry').innerText(), /the token "viewer" lacks the admin scope/);
  assert.match(await page.locator('#why-abort').innerText(), /only a running saga can be aborted/);
  await noStrayText('a stuck saga');

  // Switch to the admin token.
  await page.click('#token-button');
  await page.fill('#token-input', TOKENS.ops);
  await page.press('#token-input', 'Enter');
  await page.locator('#who', { hasText: 'ops · read, write, admin' }).waitFor();
  await until('retry enabled', () => retry.isEnabled());
  await page.evaluate(() => document.activeElement.blur()); // a clean picture
  await page.screenshot({ path: join(SHOTS, 'saga.png'), fullPage: true });

  // A retry the service cannot take now (503, made here once by the browser) shows the problem
  // and leaves the button usable.
  await page.route('**/v1/sagas/order-1003/retry', (route) => route.fulfill({
    status: 503, contentType: 'application/problem+json',
    body: JSON.stringify({ type: 'about:blank', title: 'Service Unavailable', status: 503, detail: 'the saga log does not answer' }),
  }), { times: 1 });
  await retry.click();
  const confirm = page.locator('#confirm-dialog');
  await confirm.waitFor({ state: 'visible' });
  await page.click('#confirm-ok');
  await page.locator('#action-result', { hasText: /^503 Service Unavailable: the saga log does not answer$/ }).waitFor();
  await until('retry usable again after the 503', () => retry.isEnabled());
  assert.equal(await status('order-1003'), 'stuck');

  // Fix the participant, retry behind the confirmation, see the answer and the saga succeed.
  assert.equal((await call('POST', '/demo/faults', {})).status, 200);
  await retry.click();
  await confirm.waitFor({ state: 'visible' });
  assert.match(await confirm.innerText(), /Retry saga order-1003\?/);
  await page.click('#confirm-ok');
  await page.locator('#action-result', { hasText: /^202 Accepted: retry requested/ }).waitFor();
  await page.locator('h1 .badge', { hasText: 'succeeded' }).waitFor({ timeout: 20000 });
  assert.equal(await status('order-1003'), 'succeeded');
  const ops = await page.locator('section[aria-labelledby="h-ops"] tbody tr td').allInnerTexts();
  assert.deepEqual(ops.slice(0, 2), ['retry', 'ops']);
  assert.equal(await retry.isDisabled(), true);
  assert.match(await page.locator('#why-retry').innerText(), /the saga is succeeded, only a stuck saga can be retried/);
  await noStrayText('a succeeded saga (no timers)');

  // The compensating saga shows its delayed refund as a pending timer.
  await page.fill('#jump-id', 'order-1002');
  await page.press('#jump-id', 'Enter');
  await page.waitForURL(/\/ui\/sagas\/order-1002$/);
  const timer = page.locator('section.timers li', { hasText: 'stock' });
  await timer.waitFor();
  const countdown = (await timer.innerText()).match(/^stock: delayed compensation in (\d+) min(?: (\d+) s)?$/);
  assert.ok(countdown, await timer.innerText());
  const due = Date.parse((await call('GET', '/v1/sagas/order-1002')).body.steps[1].next_attempt_at);
  const left = (due - Date.now()) / 1000;
  assert.ok(Math.abs(Number(countdown[1]) * 60 + Number(countdown[2] || 0) - left) < 3, `${countdown[0]} vs ${left} s`);

  // Keyboard: "/" goes to the id box; an unknown id says so.
  await page.keyboard.press('/');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'jump-id');
  await page.keyboard.type('no-such-saga');
  await page.keyboard.press('Enter');
  await page.locator('p.banner.bad', { hasText: 'No saga with id "no-such-saga"' }).waitFor();

  // Markup in a payload is text: no element made, no script run.
  await page.goto(`${base}/ui/sagas/order-1001`);
  await page.locator('#payload-json', { hasText: 'onerror' }).waitFor();
  assert.ok((await page.locator('#payload-json').innerText()).includes(XSS.replace(/"/g, '\\"')));
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.equal(await page.locator('main img, main script').count(), 0);
  // Its trace: a link into the tracing UI (tracing.trace_url), nothing fetched from there.
  const traceId = (await call('GET', '/v1/sagas/order-1001')).body.trace_id;
  assert.match(traceId, /^[0-9a-f]{32}$/);
  assert.equal(await page.locator('#trace-link').getAttribute('href'), `https://tempo.example/trace/${traceId}`);
  assert.equal(await page.locator('#trace-link').innerText(), traceId);

  // Paging: two a page, older and back to the newest; the page size lives in the URL too.
  await page.goto(`${base}/ui?limit=2`);
  await until('the first page', async () => JSON.stringify(await rowIds()) === '["order-1003","order-1002"]');
  await page.getByRole('link', { name: 'Older →' }).click();
  await until('the second page', async () => JSON.stringify(await rowIds()) === '["order-1001"]');
  assert.match(page.url(), /limit=2/);
  assert.match(page.url(), /cursor=/);
  assert.equal(await page.getByRole('link', { name: 'Older →' }).count(), 0);
  await page.getByRole('link', { name: '← Newest' }).click();
  await until('back to the first page', async () => JSON.stringify(await rowIds()) === '["order-1003","order-1002"]');

  // The theme toggle: dark on a light system, remembered, and back.
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const light = await background();
  await page.click('#theme-button');
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
  assert.notEqual(await background(), light);
  await page.reload();
  await until('the theme kept', async () => (await background()) !== light);
  await page.click('#theme-button');
  assert.equal(await background(), light);

  // A phone-sized screen in dark mode: no sideways scrolling, the list as cards.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: 'dark', isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  await p2.goto(`${base}/ui`);
  await p2.fill('#token-input', TOKENS.ops);
  await p2.press('#token-input', 'Enter');
  await until('the list on a phone', async () => (await p2.locator('table.sagas .id').count()) === 3);
  assert.equal(await p2.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal scroll');
  assert.equal(await p2.evaluate(() => getComputedStyle(document.body).colorScheme || getComputedStyle(document.documentElement).colorScheme), 'dark');
  await p2.screenshot({ path: join(SHOTS, 'phone-dark.png'), fullPage: true });
  await p2.goto(`${base}/ui/sagas/order-1003`);
  await p2.locator('table.calls').waitFor();
  assert.equal(await p2.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal scroll on a saga');

  // Abort a running saga: its first call answered 503 and waits a minute for its retry.
  assert.equal((await call('POST', '/demo/faults', { 'orders/create': 503 })).status, 200);
  const slow = order('order-1004', {});
  slow.steps = [{ ...slow.steps[0], retry: { max_attempts: 5, initial_backoff_ms: 60000, max_backoff_ms: 60000 } }];
  slow.timeout_ms = 3600000;
  assert.equal((await call('POST', '/v1/sagas', slow)).status, 201);
  await until('order-1004 to wait for its retry', async () =>
    (await call('GET', '/v1/sagas/order-1004')).body.steps[0].status === 'retry_scheduled');
  await page.goto(`${base}/ui/sagas/order-1004`);
  await page.locator('h1 .badge', { hasText: 'running' }).waitFor();
  assert.match(await page.locator('section.timers li', { hasText: 'order' }).innerText(), /order: action retry \(call 2\) in (\d+ s|1 min)$/);
  assert.equal(await page.locator('#action-retry').isDisabled(), true);
  // Cancelling the confirmation sends nothing.
  await page.click('#action-abort');
  await page.keyboard.press('Escape');
  await confirm.waitFor({ state: 'hidden' });
  assert.equal((await call('GET', '/v1/sagas/order-1004?include=attempts')).body.operator_actions.length, 0);
  assert.equal(await status('order-1004'), 'running');
  // Pause it with a reason: the banner says so, its timer is held, wake waits for a resume,
  // and the reason is kept with the action.
  await page.click('#action-pause');
  await confirm.waitFor({ state: 'visible' });
  await page.fill('#confirm-reason', 'orders service is being deployed');
  await page.click('#confirm-ok');
  await page.locator('#action-result', { hasText: /^202 Accepted: pause requested/ }).waitFor();
  await page.locator('#paused-banner').waitFor();
  assert.match(await page.locator('section.timers li', { hasText: 'order' }).innerText(), /held while paused$/);
  // Its deadline waits with it: what was left, not a countdown.
  assert.match(await page.locator('dl.summary .deadline-frozen').innerText(), /^(59 min|1 h)( \d+ s)? left, frozen while paused$/);
  await until('resume enabled', () => page.locator('#action-resume').isEnabled());
  assert.equal(await page.locator('#action-wake').isDisabled(), true);
  assert.match(await page.locator('#why-wake').innerText(), /paused; resume it first/);
  await page.click('#action-resume');
  await page.click('#confirm-ok');
  await page.locator('#action-result', { hasText: /^202 Accepted: resume requested/ }).waitFor();
  await page.locator('#paused-banner').waitFor({ state: 'detached' });
  // The orders service moved (here: to where it was): edit the step's URL, saying why.
  await page.click('#action-edit-order');
  await page.locator('#edit-dialog').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#edit-ok').isDisabled(), true, 'nothing to change, no reason');
  await page.fill('#edit-url-action', `${demo}/orders/create`);
  await page.fill('#edit-reason', 'orders moved behind the new gateway');
  await page.click('#edit-ok');
  await page.locator('#action-result', { hasText: /^202 Accepted: edit order requested/ }).waitFor();
  const audit = (await call('GET', '/v1/sagas/order-1004?include=attempts')).body.operator_actions;
  assert.deepEqual(audit.map((a) => [a.action, a.reason || null]),
    [['pause', 'orders service is being deployed'], ['resume', null], ['edit', 'orders moved behind the new gateway']]);
  assert.equal(audit[2].new.action.url, `${demo}/orders/create`);
  await page.click('#action-abort');
  await page.click('#confirm-ok');
  await page.locator('#action-result', { hasText: /^202 Accepted: abort requested/ }).waitFor();
  await page.locator('h1 .badge', { hasText: 'compensated' }).waitFor();
  assert.match(await page.locator('p.saga-error').innerText(), /aborted by operator/);

  // After an outage, several sagas are stuck: select them on the list and retry them at once.
  // A saga picked that is not stuck answers for itself (409) and the rest go on.
  assert.equal((await call('POST', '/demo/faults', { 'balance/commit': 503 })).status, 200);
  for (const id of ['order-1005', 'order-1006']) {
    const body = { user_id: 7, amount: 10 };
    const r = await call('POST', '/v1/sagas', {
      id, name: 'reserve_funds', mode: 'tcc', payload: body,
      steps: [{ name: 'buyer', try: { url: `${demo}/balance/reserve` }, confirm: { url: `${demo}/balance/commit` },
        cancel: { url: `${demo}/balance/release` }, retry: { max_attempts: 2, initial_backoff_ms: 50, max_backoff_ms: 100 } }],
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  await until('order-1005 and order-1006 stuck', async () => (await status('order-1005')) === 'stuck' && (await status('order-1006')) === 'stuck');
  await page.goto(`${base}/ui?status=stuck,succeeded&refresh=off`);
  await until('stuck and succeeded listed', async () => JSON.stringify(await rowIds()) === '["order-1006","order-1005","order-1003","order-1001"]');
  assert.equal(await page.locator('#bulk-count').innerText(), '0 selected');
  assert.equal(await page.locator('#bulk-retry').isDisabled(), true);
  await page.click('#pick-order-1006');
  await page.click('#pick-order-1005');
  await page.click('#pick-order-1001');
  assert.equal(await page.locator('#bulk-count').innerText(), '3 selected');
  assert.equal(await page.locator('#pick-all').isChecked(), false);
  assert.equal((await call('POST', '/demo/faults', {})).status, 200);
  await page.click('#bulk-retry');
  await confirm.waitFor({ state: 'visible' });
  assert.match(await confirm.innerText(), /Retry 3 sagas\?/);
  await page.click('#confirm-ok');
  await page.locator('#bulk-result', { hasText: 'Retry: 2 of 3 accepted.' }).waitFor();
  assert.deepEqual(await page.locator('#bulk-result li').allInnerTexts(),
    ['order-1001: 409 Conflict: the saga is succeeded, only a stuck saga can be retried']);
  await until('both retried sagas succeed', async () => (await status('order-1005')) === 'succeeded' && (await status('order-1006')) === 'succeeded');
  assert.equal(await page.locator('#bulk-count').innerText(), '0 selected');
  const by = (await call('GET', '/v1/sagas/order-1006?include=attempts')).body.operator_actions;
  assert.deepEqual(by.map((a) => [a.action, a.by]), [['retry', 'ops']]);
  // Select all on the page, then a filter change: the selection goes with the sagas shown.
  await page.click('#refresh-now');
  await until('all four listed as succeeded or stuck', async () => JSON.stringify(await rowIds()) === '["order-1006","order-1005","order-1003","order-1001"]');
  await page.click('#pick-all');
  assert.equal(await page.locator('#bulk-count').innerText(), '4 selected');
  await page.getByRole('button', { name: /^succeeded: / }).click();
  await until('only stuck listed', async () => (await page.locator('#bulk-count').innerText()) === '0 selected');

  // A cursor the service refuses (an edited link) says why and leads back to the first page.
  await page.goto(`${base}/ui?name=place_order&cursor=not-a-cursor&refresh=off`);
  await page.locator('.fetch-error', { hasText: /^400 / }).waitFor();
  await page.getByRole('link', { name: '← Newest' }).click();
  await until('the first page', async () => (await rowIds()).length > 0 && !page.url().includes('cursor='));

  // One bulk action takes at most 100 sagas: a longer page selected says so, and sends nothing.
  const many = await Promise.all(Array.from({ length: 101 }, (_, i) => {
    const o = order(`many-${i}`, {});
    return call('POST', '/v1/sagas', { ...o, name: 'many', steps: [o.steps[0]] });
  }));
  assert.deepEqual([...new Set(many.map((r) => r.status))], [201]);
  await page.goto(`${base}/ui?name=many&limit=200&refresh=off`);
  await until('101 sagas listed', async () => (await rowIds()).length === 101);
  await page.click('#pick-all');
  assert.equal(await page.locator('#bulk-count').innerText(), '101 selected');
  assert.equal(await page.locator('#bulk-retry').isDisabled(), true);
  assert.equal(await page.locator('#bulk-abort').isDisabled(), true);
  assert.match(await page.locator('#bulk-why').innerText(), /one action takes at most 100 sagas/);
  await page.click('#pick-many-0');
  assert.equal(await page.locator('#bulk-retry').isEnabled(), true);

  // A confirm that cannot succeed was done by hand: skip the stuck step, saying why (required).
  assert.equal((await call('POST', '/demo/faults', { 'balance/commit': 503 })).status, 200);
  const r7 = await call('POST', '/v1/sagas', {
    id: 'order-1007', name: 'reserve_funds', mode: 'tcc', payload: { user_id: 7, amount: 10 },
    steps: [{ name: 'buyer', try: { url: `${demo}/balance/reserve` }, confirm: { url: `${demo}/balance/commit` },
      cancel: { url: `${demo}/balance/release` }, retry: { max_attempts: 1 } }],
  });
  assert.equal(r7.status, 201, JSON.stringify(r7.body));
  await until('order-1007 stuck', async () => (await status('order-1007')) === 'stuck');
  await page.goto(`${base}/ui/sagas/order-1007`);
  const skip = page.locator('#action-skip-buyer');
  await until('skip offered for the stuck step', () => skip.isEnabled());
  await skip.click();
  await confirm.waitFor({ state: 'visible' });
  assert.equal(await page.locator('#confirm-ok').isDisabled(), true, 'no reason, no skip');
  await page.fill('#confirm-reason', 'committed by hand, ticket 4411');
  await page.click('#confirm-ok');
  await page.locator('#action-result', { hasText: /^202 Accepted: skip buyer requested/ }).waitFor();
  await page.locator('h1 .badge', { hasText: 'succeeded' }).waitFor();
  const why = await page.locator('section[aria-labelledby="h-ops"] tbody tr td').allInnerTexts();
  assert.deepEqual([why[0], why[1], why[3]], ['skip buyer', 'ops', 'committed by hand, ticket 4411']);
  assert.equal((await call('POST', '/demo/faults', {})).status, 200);

  assert.deepEqual(problems, []);
  // The participant services: the demo shop's breaker and figures; pause it for a deploy and
  // resume it, saying why (audited).
  await page.goto(`${base}/ui/services`);
  const demoSvc = new URL(base).host;
  const row = page.locator(`tr[id="svc-${demoSvc}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /closed|open|half-open/);
  await page.click(`[id="service-pause-${demoSvc}"]`);
  await confirm.waitFor({ state: 'visible' });
  await page.fill('#confirm-reason', 'demo deploy');
  await page.click('#confirm-ok');
  await page.locator('#service-result', { hasText: `200 OK: ${demoSvc} paused.` }).waitFor();
  await row.locator('.s-paused').waitFor();
  await page.screenshot({ path: join(SHOTS, 'services.png'), fullPage: true });
  await page.click(`[id="service-resume-${demoSvc}"]`);
  await confirm.waitFor({ state: 'visible' });
  await page.click('#confirm-ok');
  await page.locator('#service-result', { hasText: `200 OK: ${demoSvc} resumed.` }).waitFor();
  const svc = (await call('GET', `/v1/services/${demoSvc}`)).body;
  assert.deepEqual(svc.actions.map((a) => [a.action, a.reason || null]), [['resume', null], ['pause', 'demo deploy']]);

  // Named definitions: a saga started by definition links to it; its page shows the versions
  // and the document, and a dry run's plan (nothing recorded or called).
  const doc = { description: 'an order of the demo shop', steps: [
    { name: 'order', action: { url: `${demo}/orders/create`, body: { user_id: { $payload: '/user_id' }, amount: { $payload: '/amount' } } },
      compensation: { url: `${demo}/orders/cancel` } },
    { name: 'pay', action: { url: `${demo}/balance/deduct` } }] };
  const stored = await call('PUT', '/v1/definitions/demo_order', doc);
  assert.equal(stored.status, 201);
  const byDef = await call('POST', '/v1/sagas?wait_ms=5000', { definition: 'demo_order', id: 'by-definition-1', payload: { user_id: 1, amount: 5 } });
  assert.equal(byDef.status, 201);
  await page.goto(`${base}/ui/sagas/by-definition-1`);
  await page.locator('#saga-definition', { hasText: 'demo_order v1' }).waitFor();
  await page.click('#saga-definition a');
  await page.locator('#definition-json').waitFor();
  assert.match(await page.locator('#definition-json').innerText(), /"\$payload": "\/user_id"/);
  await page.fill('#dry-payload', '{"user_id": 1, "amount": 5}');
  await page.click('#dry-run');
  await page.locator('#plan-ready', { hasText: 'Ready' }).waitFor();
  assert.equal(await page.locator('#plan-levels').innerText(), 'order → pay');
  assert.equal(await page.locator('#plan-undo').innerText(), 'order');
  await page.screenshot({ path: join(SHOTS, 'definition.png'), fullPage: true });
  await page.fill('#dry-payload', '{}');
  await page.click('#dry-run');
  await page.locator('#dry-problem', { hasText: '/payload/user_id' }).waitFor();
  await page.click('#nav-definitions');
  await page.locator('tr[id="def-demo_order"]', { hasText: 'order → pay' }).waitFor();
  assert.equal((await call('GET', '/v1/sagas?name=demo_order')).body.items.length, 1, 'dry runs record nothing');
  assert.deepEqual(problems, []);
});
