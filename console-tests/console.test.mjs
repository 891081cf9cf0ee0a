// The console in a real browser: Playwright (playwright-core) driving Debian's Chromium
// against a `facepay demo --serve` of its own (a small demo day, port 0, a fresh data dir).
// Sign-in per role, every page with the demo's data, filters and pages, a bill upload that
// finds the demo's planted breaks, a key created and revoked, a cross-tenant URL, a form
// without its CSRF token; axe-core on every page (no serious or critical violation);
// screenshots of every page in zh-CN and en under target/console-screenshots/.
// Run by scripts/browser.sh test (CHROMIUM_BIN, FACEPAY_BIN).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');
const SHOTS = process.env.CONSOLE_SCREENSHOTS ?? 'target/console-screenshots';
const DEMO_DAY = '2026-03-03';
const STARTUP_MS = 300_000;

let demo, base, keys = {}, summary, dataDir, browser;

/** Starts the demo server; resolves with its address, keys and JSON summary. */
function startDemo() {
  dataDir = mkdtempSync(join(tmpdir(), 'facepay-console-'));
  const env = { ...process.env, FACEPAY_DATA_DIR: dataDir, FACEPAY_HTTP_ADDR: '127.0.0.1:0', RUST_LOG: 'warn' };
  const args = ['demo', '--json', '--serve', '--payments', '3000', '--payers', '400', '--seed', '7'];
  demo = spawn(process.env.FACEPAY_BIN, args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no console address within ${STARTUP_MS} ms:\n${out}`)), STARTUP_MS);
    demo.on('exit', (code) => reject(new Error(`the demo exited (${code}):\n${out}`)));
    demo.stdout.on('data', (chunk) => {
      out += chunk;
      for (const m of out.matchAll(/^console sign-in key \((\w+)\): (fpk_\S+)$/gm)) keys[m[1]] = m[2];
      const addr = out.match(/^console: (http:\/\/\S+)\/console$/m);
      if (addr && keys.device) {
        clearTimeout(timer);
        base = addr[1];
        summary = JSON.parse(out.slice(0, out.indexOf('facepay API listening')));
        resolve();
      }
    });
  });
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  await startDemo();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  demo?.kill('SIGTERM');
});

/** A signed-in page of a fresh browser context (its own cookies), in `lang`. */
async function signedIn(role, lang = 'en') {
  const context = await browser.newContext({ locale: lang, bypassCSP: false, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/console/sign-in`);
  await page.fill('#token', keys[role]);
  await Promise.all([page.waitForURL((u) => !u.pathname.endsWith('/sign-in')), page.click('button[type=submit]')]);
  return { context, page };
}

/** axe-core on the page's document (a context of its own that may inject the script). */
async function accessible(context, url, name) {
  const cookies = await context.cookies();
  const checker = await browser.newContext({ bypassCSP: true, locale: 'en' });
  await checker.addCookies(cookies);
  const page = await checker.newPage();
  await page.goto(url);
  await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(() => globalThis.axe.run(document, { resultTypes: ['violations'] }));
  await checker.close();
  const bad = result.violations.filter((v) => ['serious', 'critical'].includes(v.impact));
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.length})`), [], `${name}: accessibility`);
}

/** Every page of `pages` renders (200, its title), passes axe, and is photographed in both languages. */
async function visit(role, pages) {
  for (const lang of ['en', 'zh-CN']) {
    const { context, page } = await signedIn(role, lang);
    for (const [name, path] of pages) {
      const resp = await page.goto(`${base}${path}`);
      assert.equal(resp.status(), 200, `${role} ${name} ${lang}`);
      assert.equal(await page.getAttribute('html', 'lang'), lang, `${name}: the page's language`);
      await page.screenshot({ path: join(SHOTS, `${lang}-${role}-${name}.png`), fullPage: true });
      if (lang === 'en') await accessible(context, `${base}${path}`, `${role} ${name}`);
    }
    await context.close();
  }
}

test('each role signs in and lands on its own first page', async () => {
  const homes = { admin: '/console/admin/keys', finance: '/console/finance/runs', device: '/console/orders' };
  for (const role of ['admin', 'finance', 'merchant', 'store', 'device']) {
    const { context, page } = await signedIn(role);
    const path = new URL(page.url()).pathname;
    if (homes[role]) assert.equal(path, homes[role], role);
    else assert.match(path, /^\/console\/merchants\/[^/]+$/, role);
    const cookie = (await context.cookies()).find((c) => c.name === 'fp_session');
    assert.ok(cookie.httpOnly && cookie.sameSite === 'Strict', `${role}: the session cookie`);
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
    assert.ok(!stored.includes('fpk_'), `${role}: the key is nowhere in the browser's storage`);
    await context.close();
  }
});

test('a wrong key signs nobody in', async () => {
  const context = await browser.newContext({ locale: 'en' });
  const page = await context.newPage();
  await page.goto(`${base}/console/sign-in`);
  await page.fill('#token', `fpk_${'0'.repeat(24)}_${'1'.repeat(64)}`);
  await page.click('button[type=submit]');
  await page.waitForSelector('.error');
  assert.match(await page.textContent('.error'), /Sign-in failed/);
  assert.ok(!(await context.cookies()).some((c) => c.name === 'fp_session'));
  await context.close();
});

test("the merchant's pages show the demo's day, with filters and pages", async () => {
  const { context, page } = await signedIn('merchant');
  const m = new URL(page.url()).pathname;
  await page.goto(`${base}${m}/transactions?date=${DEMO_DAY}&status=PAID&limit=20`);
  const statuses = await page.$$eval('tbody .status', (s) => s.map((e) => e.textContent));
  assert.equal(statuses.length, 20, 'a full page of paid attempts');
  assert.ok(statuses.every((s) => s === 'PAID'), 'the status filter');
  const firstOrder = await page.textContent('tbody tr td:nth-child(2) a');
  await page.click('a[rel=next]');
  const second = await page.$$eval('tbody tr td:nth-child(2) a', (a) => a.map((e) => e.textContent));
  assert.ok(second.length > 0 && !second.includes(firstOrder), 'the next page holds other orders');
  assert.ok(new URL(page.url()).searchParams.get('status') === 'PAID', 'the next page keeps the filter');
  await page.click('tbody tr td:nth-child(2) a');
  assert.equal(await page.textContent('[data-figure=status]'), 'PAID');
  const orderPath = new URL(page.url()).pathname;
  // The day's CSV export (streamed) adds up to what the API says of the day.
  const csv = await context.request.get(`${base}${m}/transactions.csv?date=${DEMO_DAY}&status=PAID`);
  assert.equal(csv.status(), 200);
  const rows = (await csv.text()).trim().split('\n');
  assert.equal(rows[0].split(',')[3], 'amount');
  const fen = (s) => { const [y, f = ''] = s.split('.'); return Number(y) * 100 + Number(f.padEnd(2, '0')); };
  const csvFen = rows.slice(1).reduce((sum, r) => sum + fen(r.split(',')[3]), 0);
  const merchantId = m.split('/').pop();
  const glance = await (await fetch(`${base}/v1/merchants/${merchantId}/glance?date=${DEMO_DAY}`,
    { headers: { authorization: `Bearer ${keys.merchant}` } })).json();
  assert.equal(rows.length - 1, glance.paid, 'one line per paid attempt');
  assert.equal(csvFen, fen(glance.paid_amount), 'the export adds up to the API');
  await page.goto(`${base}${m}/settlement`);
  assert.ok((await page.$$('svg.chart rect')).length >= 1, 'the chart has its bars');
  // Members with their last visits: the demo's members paid, so some have one.
  await page.goto(`${base}${m}/members`);
  const visits = await page.$$eval('tbody tr td:nth-child(6)', (d) => d.map((e) => e.textContent.trim()));
  assert.ok(visits.some((v) => /^\d{4}-\d{2}-\d{2}/.test(v)), `a member's last visit: ${visits.slice(0, 3)}`);
  // The device filter: typed into the form, every row is that device's.
  await page.goto(`${base}${m}/transactions?date=${DEMO_DAY}`);
  const device = (await page.textContent('tbody tr td:nth-child(8)')).trim();
  await page.fill('#device_id', device);
  await Promise.all([page.waitForURL(/device_id=/), page.click('form.filters button')]);
  const devices = await page.$$eval('tbody tr td:nth-child(8)', (d) => d.map((e) => e.textContent.trim()));
  assert.ok(devices.length > 0 && devices.every((d) => d === device), 'the device filter');
  await context.close();
  await visit('merchant', [
    ['overview', `${m}?date=${DEMO_DAY}`], ['transactions', `${m}/transactions?date=${DEMO_DAY}`],
    ['order', orderPath], ['members', `${m}/members`], ['settlement', `${m}/settlement`],
  ]);
  await visit('store', [['transactions', `${m}/transactions?date=${DEMO_DAY}`]]);
  await visit('device', [['order-lookup', '/console/orders']]);
});

test('a merchant asking for another tenant gets the same 404 as for nothing', async () => {
  const fin = await signedIn('finance');
  await fin.page.goto(`${base}/console/merchants`);
  const all = await fin.page.$$eval('ul.cards a', (a) => a.map((e) => e.textContent));
  await fin.context.close();
  const { context, page } = await signedIn('merchant');
  const own = new URL(page.url()).pathname.split('/').pop();
  const other = all.find((x) => x !== own);
  assert.ok(other, 'the demo has another merchant');
  const theirs = await page.goto(`${base}/console/merchants/${other}/transactions?date=${DEMO_DAY}`);
  const theirsText = await page.textContent('main');
  const nothing = await page.goto(`${base}/console/merchants/1900009999/transactions`);
  assert.equal(theirs.status(), 404);
  assert.equal(nothing.status(), 404);
  assert.equal(theirsText, await page.textContent('main'));
  assert.equal((await page.goto(`${base}/console/finance/breaks`)).status(), 404, 'a page of another role');
  await context.close();
});

test("finance uploads the demo's bill and finds its planted breaks", async () => {
  const { context, page } = await signedIn('finance');
  const bill = join(dataDir, `bill-${DEMO_DAY}.csv`);
  await page.fill('#date', DEMO_DAY);
  await page.setInputFiles('#bill', bill);
  await Promise.all([page.waitForURL(/\/console\/finance\/breaks\?run_id=/), page.click('form[enctype] button')]);
  const uploadRun = new URL(page.url()).searchParams.get('run_id');
  // The demo reconciled this bill before: its run (the oldest) holds the planted breaks.
  await page.goto(`${base}/console/finance/runs`);
  const runs = await page.$$eval('a[data-figure=breaks]', (a) => a.map((e) => e.getAttribute('href')));
  assert.ok(runs.length >= 2 && runs[0].endsWith(uploadRun), 'the upload is the newest run');
  await page.goto(`${base}${runs[runs.length - 1]}`);
  // Every planted break, as its class, and no other (a timing difference is no break).
  const planted = Object.fromEntries(Object.entries(summary.reconciliation.planted).filter(([c]) => c !== 'timing_difference'));
  const found = {};
  for (const c of await page.$$eval('tr[data-break] td:first-child code', (e) => e.map((x) => x.textContent))) {
    found[c] = (found[c] ?? 0) + 1;
  }
  assert.ok(Object.keys(planted).length > 0, 'the demo planted breaks');
  assert.deepEqual(found, planted);
  // The upload's own run: an open break resolved through its form, once, and audited.
  await page.goto(`${base}/console/finance/breaks?run_id=${uploadRun}&unresolved=true`);
  const open = await page.getAttribute('tr[data-break]:has(details) ', 'data-break');
  assert.ok(open, 'the uploaded run has an open break');
  const row = `tr[data-break="${open}"]`;
  await page.click(`${row} summary`);
  await page.selectOption(`${row} select[name=action]`, 'accepted');
  await page.fill(`${row} input[name=resolved_by]`, 'browser test');
  await page.fill(`${row} input[name=reason]`, 'checked against the channel');
  await Promise.all([page.waitForLoadState('load'), page.click(`${row} form button`)]);
  assert.equal(await page.$(`${row} details`), null, 'no longer open');
  const audit = await (await fetch(`${base}/v1/audit?limit=20`, { headers: { authorization: `Bearer ${keys.finance}` } })).json();
  assert.ok(audit.items.some((e) => e.subject === open || JSON.stringify(e.detail).includes(open)), 'the resolution is audited');
  await page.goto(`${base}${runs[runs.length - 1]}`);
  await visit('finance', [
    ['runs', '/console/finance/runs'], ['breaks', new URL(page.url()).pathname + new URL(page.url()).search],
    ['merchants', '/console/merchants'], ['rejected', '/console/rejected'], ['audit', '/console/audit'],
  ]);
  await context.close();
});

test('an admin creates a key that signs in, then revokes it, which ends its session', async () => {
  const { context, page } = await signedIn('admin');
  await page.selectOption('#role', 'finance');
  await page.fill('#label', 'browser test');
  await page.click('form[action="/console/admin/keys"] button');
  const token = (await page.textContent('code.token')).trim();
  const keyId = await page.getAttribute('code.token', 'data-token');
  assert.match(token, /^fpk_/);
  keys.made = token;
  const made = await signedIn('made');
  assert.equal(new URL(made.page.url()).pathname, '/console/finance/runs');
  await page.reload();
  assert.equal(await page.$('code.token'), null, 'the token is shown once');
  await page.click(`tr[data-key="${keyId}"] button`);
  await made.page.reload();
  assert.equal(new URL(made.page.url()).pathname, '/console/sign-in', 'the revoked key is signed out');
  await made.context.close();
  await context.close();
  await visit('admin', [['keys', '/console/admin/keys']]);
});

/** The API's answer to `path` with `role`'s key. */
async function api(role, path) {
  return (await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${keys[role]}` } })).json();
}

test('a merchant refunds a paid order from its page, once however often the form goes', async () => {
  const { context, page } = await signedIn('merchant');
  const m = new URL(page.url()).pathname;
  const merchantId = m.split('/').pop();
  const paid = await api('merchant', `/v1/merchants/${merchantId}/transactions?date=${DEMO_DAY}&status=PAID&limit=50`);
  const no = paid.items.map((i) => i.out_trade_no).find(Boolean);
  const before = await api('merchant', `/v1/merchants/${merchantId}/orders/${encodeURIComponent(no)}`);
  await page.goto(`${base}${m}/orders/${encodeURIComponent(no)}`);
  const refundNo = await page.inputValue('#out_refund_no');
  const csrf = await page.inputValue('form[action$="/refunds"] input[name=csrf]');
  await page.fill('#amount', '0.01');
  await Promise.all([page.waitForLoadState('load'), page.click('form[action$="/refunds"] button')]);
  assert.equal(new URL(page.url()).pathname, `${m}/orders/${encodeURIComponent(no)}`, 'back on the order');
  assert.ok(await page.$(`tr[data-refund="${refundNo}"]`), 'the refund is listed on the order');
  // The same form again (a double click, a resend): the same refund.
  const again = await context.request.post(`${base}${m}/orders/${encodeURIComponent(no)}/refunds`,
    { form: { csrf, out_refund_no: refundNo, amount: '0.01' }, maxRedirects: 0 });
  assert.equal(again.status(), 303);
  const after = await api('merchant', `/v1/merchants/${merchantId}/orders/${encodeURIComponent(no)}`);
  const fen = (s) => Math.round(Number(s) * 100);
  assert.equal(fen(after.refunded) - fen(before.refunded), 1, 'one fen back, once');
  await page.screenshot({ path: join(SHOTS, 'en-merchant-refunded-order.png'), fullPage: true });
  await accessible(context, page.url(), 'refunded order');
  await context.close();
  await visit('merchant', [['devices', `${m}/fleet`]]);
});

test("an admin changes a merchant's limit and freezes and unfreezes a payer, each through the ledger", async () => {
  const { context, page } = await signedIn('admin');
  await page.click('nav a[href="/console/merchants"]');
  await page.click('ul.cards li a[href$="/fleet"]');
  const fleetPath = new URL(page.url()).pathname;
  const merchantId = fleetPath.split('/')[3];
  assert.ok((await page.$$('tr[data-device]')).length > 0, 'the merchant\'s devices');
  assert.ok(!(await page.textContent('tbody')).includes('never'), 'every demo device was heard of');
  await page.fill('#single_limit', '1500.00');
  await Promise.all([page.waitForLoadState('load'), page.click('form[action$="/limit"] button')]);
  assert.match(await page.textContent('[data-figure=single_limit]'), /1500\.00/);
  const fleet = await api('admin', `/v1/merchants/${merchantId}/fleet`);
  assert.equal(fleet.single_limit, '1500.00');
  const paid = await api('finance', `/v1/merchants/${merchantId}/transactions?date=${DEMO_DAY}&status=PAID&limit=1`);
  const payer = paid.items[0].payer_id;
  await page.click('nav a[href="/console/admin/payers"]');
  await page.fill('#payer_id', payer);
  await Promise.all([page.waitForURL(/payer_id=/), page.click('form.filters button')]);
  await Promise.all([page.waitForLoadState('load'), page.click('form[action$="/freeze"] button')]);
  assert.equal((await api('admin', `/v1/payers/${payer}/balance`)).frozen, true);
  assert.match(await page.textContent('[data-figure=frozen]'), /Frozen/);
  await Promise.all([page.waitForLoadState('load'), page.click('form[action$="/unfreeze"] button')]);
  assert.equal((await api('admin', `/v1/payers/${payer}/balance`)).frozen, false);
  const audit = await api('admin', '/v1/audit?limit=50');
  const actions = audit.items.map((e) => e.action);
  for (const a of ['merchant_limit_changed', 'account_frozen', 'account_unfrozen']) assert.ok(actions.includes(a), a);
  await context.close();
  await visit('admin', [['merchants', '/console/merchants'], ['devices', fleetPath],
    ['payer', `/console/admin/payers?payer_id=${encodeURIComponent(payer)}`]]);
});

test('a form posted without its CSRF token is refused and does nothing', async () => {
  const { context, page } = await signedIn('admin');
  const before = await page.$$eval('tr[data-key]', (r) => r.length);
  const resp = await context.request.post(`${base}/console/admin/keys`, { form: { role: 'admin', label: 'forged' } });
  assert.equal(resp.status(), 403);
  await page.reload();
  assert.equal(await page.$$eval('tr[data-key]', (r) => r.length), before, 'no key was made');
  await context.close();
});

test('the sign-in page and the 404 page pass axe too', async () => {
  const context = await browser.newContext({ locale: 'en' });
  await accessible(context, `${base}/console/sign-in`, 'sign-in');
  const page = await context.newPage();
  await page.goto(`${base}/console/sign-in`);
  await page.screenshot({ path: join(SHOTS, 'en-sign-in.png') });
  await context.close();
  const { context: signed } = await signedIn('merchant');
  await accessible(signed, `${base}/console/no-such-page`, '404');
  await signed.close();
});
