// The saga-orchestrator console: a client of the /v1 API, in plain JavaScript (no build step,
// nothing fetched from elsewhere). Every value from the API is put in the page as text, never as
// HTML: saga names, errors and payloads come from callers and participants.
'use strict';

// The saga statuses of the API, in the order an operator reads them; the last two are terminal.
const STATUSES = ['prepared', 'running', 'compensating', 'confirming', 'stuck', 'succeeded', 'compensated'];
const TERMINAL = new Set(['succeeded', 'compensated']);
const LIST_REFRESH_MS = 5000;
const SAGA_REFRESH_MS = 2000;
const PAGE_SIZE = 50;

const state = {
  token: sessionStorage.getItem('saga-console-token') || '',
  me: null,           // GET /v1/whoami
  offsetMs: 0,        // server clock minus ours, from the Date header
  timer: null,        // the pending auto-refresh
  view: null,         // what is on screen: {kind, refresh()}
  gen: 0,             // bumped by every navigation, filter change and refresh: older answers are dropped
  lastList: '/ui',    // where "Sagas" goes back to, filters included
  selected: new Set(), // ids picked on the list for a bulk action (only those shown)
  acting: new Set(),   // "id/action" of operator actions in flight: never sent twice at once
  meError: null,       // the status of the last failed GET /v1/whoami
};

/** How many sagas one bulk action takes (the API's limit). */
const BULK_MAX = 100;

// ---------- DOM ----------

/** h('tag.class', {attr: v, onclick: f}?, ...children): an element; strings become text. */
function h(spec, props, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag);
  // h('p', 'text') and h('p', node): no props, the second argument is a child.
  if (props !== null && (typeof props !== 'object' || props instanceof Node || Array.isArray(props))) {
    children.unshift(props);
    props = null;
  }
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'class') el.className += ' ' + v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);
const main = () => $('#main');

/** el.replaceChildren(...children), leaving out null, undefined and false (the DOM would
 * write them as the text "null"); strings become text. */
function put(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

/** A link that navigates inside the console without reloading it. */
function navLink(href, ...children) {
  return h('a', { href, 'data-nav': true }, ...children);
}

function badge(status) {
  return h('span.badge', { class: 's-' + status, text: status.replace(/_/g, ' ') });
}

// ---------- time ----------

const now = () => Date.now() + state.offsetMs;

/** 9 min 40 s, 2 h 5 min, 3 d 4 h, 850 ms: the two largest units. */
function span(ms) {
  ms = Math.abs(ms);
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  const units = [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']];
  const parts = [];
  let rest = s;
  for (const [size, name] of units) {
    const n = Math.floor(rest / size);
    if (n > 0 || (parts.length > 0 && parts.length < 2)) parts.push(`${n} ${name}`);
    rest -= n * size;
    if (parts.length === 2) break;
  }
  if (parts.length === 2 && parts[1].startsWith('0 ')) parts.pop();
  return parts.join(' ') || '0 s';
}

/** "in 9 min 40 s" or "5 min ago", against the server's clock; a due time that has passed is
 * "due now" (its call is on its way) or, later, "overdue by 40 s". */
function relative(iso, due) {
  const d = Date.parse(iso) - now();
  if (Math.abs(d) < 1000) return 'now';
  if (d > 0) return `in ${span(d)}`;
  if (due) return d > -5000 ? 'due now' : `overdue by ${span(d)}`;
  return `${span(d)} ago`;
}

function localTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

/** 14:02:03.123 today; with the date on another day (a delayed compensation, days later). */
function clock(iso) {
  const d = new Date(iso);
  const t = d.toLocaleTimeString(undefined, { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
  return d.toDateString() === new Date(now()).toDateString() ? t : `${d.toLocaleDateString()} ${t}`;
}

/** A time shown relative to now, kept current by the ticker, exact on hover. */
function when(iso, due = false) {
  if (!iso) return h('span.muted', { text: '—' });
  return h('time', { datetime: iso, title: `${localTime(iso)} (${iso})`, 'data-rel': iso, 'data-due': due, text: relative(iso, due) });
}

function tick() {
  for (const el of document.querySelectorAll('[data-rel]')) el.textContent = relative(el.dataset.rel, el.hasAttribute('data-due'));
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Calls the API with the session's token (and a JSON body, if given); answers {status, body};
 * 401 asks for a token. */
async function api(path, method = 'GET', json = undefined) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, cache: 'no-store', body: json === undefined ? undefined : JSON.stringify(json) });
  } catch (e) {
    throw new ApiError(0, { detail: `the service does not answer (${e.message})` });
  }
  const date = Date.parse(res.headers.get('Date') || '');
  // The Date header has whole seconds: only a clear skew is worth correcting.
  if (!Number.isNaN(date) && Math.abs(date - Date.now()) > 2000) state.offsetMs = date - Date.now();
  const type = res.headers.get('Content-Type') || '';
  const body = type.includes('json') ? await res.json().catch(() => null) : null;
  if (res.status === 401) {
    askToken(state.token ? `The token was refused: ${body && body.detail}` : null);
    throw new ApiError(401, body);
  }
  if (!res.ok && method === 'GET') throw new ApiError(res.status, body);
  // A 2xx that is not JSON (a proxy's login page, say) is no usable answer: callers read fields.
  if (res.ok && body === null) throw new ApiError(0, { detail: `the answer to ${method} ${path} was not JSON (${type || 'no type'})` });
  return { status: res.status, body };
}

// ---------- token and identity ----------

function askToken(why) {
  const dialog = $('#token-dialog');
  $('#token-error').textContent = why || '';
  if (dialog.open) return; // a poll's 401 must not wipe what is being typed
  $('#token-input').value = '';
  dialog.returnValue = ''; // Escape closes without a value: then nothing changes
  $('#token-forget').hidden = !state.token;
  dialog.showModal();
}

async function whoami() {
  try {
    const { body } = await api('/v1/whoami');
    state.me = body;
  } catch (e) {
    state.me = null;
    state.meError = e.status;
    // A token the service refuses (401) or one without read (403): offer to change it.
    $('#token-button').hidden = ![401, 403].includes(e.status);
    if (e.status === 403) askToken(e.message);
    else if (e.status !== 401) showError(e);
    return false;
  }
  const who = $('#who');
  const me = state.me;
  who.textContent = me.tokens_required ? `${me.name} · ${me.scopes.join(', ')}` : 'open service (no tokens)';
  $('#token-button').hidden = !me.tokens_required;
  return true;
}

const can = (scope) => !scope || (!!state.me && state.me.scopes.includes(scope));

function setupToken() {
  const dialog = $('#token-dialog');
  dialog.addEventListener('close', async () => {
    if (dialog.returnValue === 'save') {
      state.token = $('#token-input').value.trim();
      sessionStorage.setItem('saga-console-token', state.token);
    } else if (dialog.returnValue === 'forget') {
      state.token = '';
      sessionStorage.removeItem('saga-console-token');
    } else {
      return;
    }
    if (await whoami()) render();
  });
  $('#token-button').addEventListener('click', () => askToken(null));
}

// ---------- theme ----------

function setupTheme() {
  const button = $('#theme-button');
  const dark = () => document.documentElement.dataset.theme === 'dark' ||
    (!document.documentElement.dataset.theme && matchMedia('(prefers-color-scheme: dark)').matches);
  const label = () => { button.textContent = dark() ? 'Light' : 'Dark'; };
  const saved = localStorage.getItem('saga-console-theme');
  if (saved) document.documentElement.dataset.theme = saved;
  label();
  button.addEventListener('click', () => {
    const next = dark() ? 'light' : 'dark';
    document.documentElement.dataset.theme = next;
    localStorage.setItem('saga-console-theme', next);
    label();
  });
}

// ---------- routing ----------

function go(href, replace = false) {
  if (replace) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  render();
}

function render() {
  clearTimeout(state.timer);
  state.gen += 1;
  const m = location.pathname.match(/^\/ui\/sagas\/(.+)$/);
  let id = null;
  try {
    id = m && decodeURIComponent(m[1]);
  } catch {
    id = m[1]; // a malformed %-escape: shown as typed, and not found
  }
  const d = location.pathname.match(/^\/ui\/definitions\/(.+)$/);
  if (m) sagaPage(id);
  else if (location.pathname === '/ui/services') servicesPage();
  else if (location.pathname === '/ui/definitions') definitionsPage();
  else if (d) definitionPage(safeDecode(d[1]));
  else listPage();
}

function schedule(ms) {
  clearTimeout(state.timer);
  if (!autoRefresh()) return;
  state.timer = setTimeout(async () => {
    if (document.hidden) return schedule(ms); // no polling from a tab nobody looks at
    if (state.view) await state.view.refresh();
  }, ms);
}

const params = () => new URLSearchParams(location.search);
const autoRefresh = () => params().get('refresh') !== 'off';

/** The visible auto-refresh switch; its state lives in the URL (?refresh=off). */
function refreshControls(refreshNow) {
  const box = h('input', { type: 'checkbox', id: 'auto-refresh', checked: autoRefresh() });
  box.addEventListener('change', () => {
    const p = params();
    if (box.checked) p.delete('refresh'); else p.set('refresh', 'off');
    history.replaceState(null, '', `${location.pathname}${p.toString() ? '?' + p : ''}`);
    if (box.checked) refreshNow(); else clearTimeout(state.timer);
  });
  return h('div.refresh',
    h('label', { for: 'auto-refresh' }, box, ' Auto-refresh'),
    h('button', { type: 'button', id: 'refresh-now', onclick: refreshNow }, 'Refresh now'),
    h('span.muted', { id: 'updated', 'aria-live': 'off' }));
}

function updated() {
  const el = $('#updated');
  if (el) el.textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function showError(e, where) {
  const target = where || main();
  const old = target.querySelector(':scope > .fetch-error');
  if (old) old.remove();
  const text = e.status ? `${e.status}${e.problem && e.problem.title ? ' ' + e.problem.title : ''}: ${e.message}` : e.message;
  target.prepend(h('p.banner.bad.fetch-error', { role: 'alert', text }));
}

function clearError(where) {
  const old = (where || main()).querySelector(':scope > .fetch-error');
  if (old) old.remove();
}

// ---------- the list ----------

function listFilters() {
  const p = params();
  const statuses = (p.get('status') || '').split(',').filter((s) => STATUSES.includes(s));
  const limit = Number(p.get('limit'));
  return {
    statuses,
    name: p.get('name') || '',
    cursor: p.get('cursor') || '',
    limit: Number.isInteger(limit) && limit >= 1 && limit <= 500 ? limit : PAGE_SIZE,
  };
}

function listHref(f) {
  const p = params();
  for (const k of ['status', 'name', 'cursor', 'limit']) p.delete(k);
  if (f.statuses.length) p.set('status', f.statuses.join(','));
  if (f.name) p.set('name', f.name);
  if (f.cursor) p.set('cursor', f.cursor);
  if (f.limit !== PAGE_SIZE) p.set('limit', String(f.limit));
  const q = p.toString();
  return `/ui${q ? '?' + q : ''}`;
}

/** A new filter: into the URL, and the list reloads in place, keeping focus where it is. */
function setFilters(f) {
  // A selection is of the sagas shown: other filters show others.
  state.selected.clear();
  history.replaceState(null, '', listHref(f));
  state.lastList = location.pathname + location.search;
  state.gen += 1;
  state.view.refresh();
}

function listPage() {
  document.title = 'Sagas · saga-orchestrator';
  state.selected.clear();
  const f = listFilters();
  state.lastList = location.pathname + location.search;
  const name = h('input', { id: 'name-filter', value: f.name, placeholder: 'any', autocomplete: 'off',
    spellcheck: 'false', pattern: '[A-Za-z0-9_.\\-]{1,64}', title: '1-64 characters of A-Z a-z 0-9 _ . -' });
  let typing;
  name.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      if (state.view !== view || !name.checkValidity()) return; // the operator has moved on
      setFilters({ ...listFilters(), name: name.value.trim(), cursor: '' });
    }, 300);
  });
  const refresh = async () => {
    clearTimeout(state.timer);
    state.gen += 1; // a refresh still in flight (the timer's, say) must not draw over this one
    await Promise.all([loadCounts(), loadRows()]);
    if (state.view !== view) return; // navigated away meanwhile
    updated();
    schedule(LIST_REFRESH_MS);
  };
  const page = h('div.list',
    h('h1', 'Sagas'),
    h('section.counts', { 'aria-label': 'Sagas per status; select to filter', id: 'counts' }),
    h('div.filters',
      h('label', { for: 'name-filter' }, 'Name'), name,
      refreshControls(refresh)),
    bulkBar(refresh),
    h('div.table-wrap', { id: 'rows' }, h('p.muted', 'Loading…')),
    h('nav.pager', { 'aria-label': 'Pages', id: 'pager' }));
  put(main(), page);
  const view = { kind: 'list', refresh };
  state.view = view;
  refresh();
}

async function loadCounts() {
  const f = listFilters();
  const box = $('#counts');
  const gen = state.gen;
  let body;
  try {
    body = (await api(`/v1/counts${f.name ? '?name=' + encodeURIComponent(f.name) : ''}`)).body;
  } catch (e) {
    if (gen === state.gen) put(box, h('p.muted', { text: `counts unavailable: ${e.message}` }));
    return;
  }
  if (gen !== state.gen) return; // for other filters, or another page
  const fmt = (n) => (n >= body.capped_at ? `${n}+` : String(n));
  const total = STATUSES.reduce((a, s) => a + (body.counts[s] || 0), 0);
  const chip = (label, n, pressed, onclick, extra) =>
    h('button.chip', { type: 'button', 'aria-pressed': String(pressed), 'aria-label': `${label}: ${n}`, onclick, class: extra },
      h('span.chip-label', label), h('span.chip-count', { text: n }));
  const chips = [chip('all', STATUSES.some((s) => body.counts[s] >= body.capped_at) ? `${total}+` : String(total),
    f.statuses.length === 0, () => setFilters({ ...listFilters(), statuses: [], cursor: '' }))];
  for (const s of STATUSES) {
    const n = body.counts[s] || 0;
    const on = f.statuses.includes(s);
    // The filters as they are when clicked: another chip or the name may have changed them since.
    const toggle = () => {
      const now = listFilters();
      const next = now.statuses.includes(s) ? now.statuses.filter((x) => x !== s) : [...now.statuses, s];
      setFilters({ ...now, statuses: STATUSES.filter((x) => next.includes(x)), cursor: '' });
    };
    chips.push(chip(s, fmt(n), on, toggle, `s-${s}${s === 'stuck' && n > 0 ? ' alarm' : ''}`));
  }
  // Keep focus on the chip the operator used, across the redraw.
  const focused = document.activeElement && box.contains(document.activeElement)
    ? document.activeElement.querySelector('.chip-label').textContent : null;
  put(box, ...chips);
  if (focused) [...box.querySelectorAll('.chip')].find((c) => c.querySelector('.chip-label').textContent === focused)?.focus();
}

async function loadRows() {
  const f = listFilters();
  const q = new URLSearchParams({ limit: String(f.limit) });
  if (f.statuses.length) q.set('status', f.statuses.join(','));
  if (f.name) q.set('name', f.name);
  if (f.cursor) q.set('cursor', f.cursor);
  const [wrap, pager, gen] = [$('#rows'), $('#pager'), state.gen];
  let page;
  try {
    page = (await api(`/v1/sagas?${q}`)).body;
  } catch (e) {
    if (gen === state.gen && e.status !== 401) {
      showError(e);
      // A cursor the service refuses (an old or edited link): the way back to the first page.
      if (f.cursor) put(pager, navLink(listHref({ ...f, cursor: '' }), '← Newest'));
    }
    return;
  }
  if (gen !== state.gen) return; // for other filters, or another page
  clearError();
  // Only what is shown stays selected: an action never reaches a saga the operator cannot see.
  const shown = new Set(page.items.map((s) => s.id));
  for (const id of [...state.selected]) if (!shown.has(id)) state.selected.delete(id);
  const focused = document.activeElement && wrap.contains(document.activeElement) && document.activeElement.matches('input.pick')
    ? document.activeElement.id : null;
  if (page.items.length === 0) {
    put(wrap, h('p.empty', f.statuses.length || f.name ? 'No saga matches these filters.' : 'No sagas yet.'));
  } else {
    const all = h('input.pick', { type: 'checkbox', id: 'pick-all', 'aria-label': 'Select every saga on this page',
      checked: page.items.every((s) => state.selected.has(s.id)) });
    all.addEventListener('change', () => {
      for (const s of page.items) if (all.checked) state.selected.add(s.id); else state.selected.delete(s.id);
      for (const box of wrap.querySelectorAll('tbody input.pick')) box.checked = all.checked;
      drawBulk();
    });
    const pick = (s) => {
      const box = h('input.pick', { type: 'checkbox', id: `pick-${s.id}`, 'aria-label': `Select ${s.id}`, checked: state.selected.has(s.id) });
      box.addEventListener('change', () => {
        if (box.checked) state.selected.add(s.id); else state.selected.delete(s.id);
        all.checked = page.items.every((x) => state.selected.has(x.id));
        drawBulk();
      });
      return box;
    };
    const head = h('thead', h('tr', h('th.pick-cell', { scope: 'col' }, all),
      ['Saga', 'Status', 'Steps', 'Created', 'Updated', 'Error'].map((t) => h('th', { scope: 'col' }, t))));
    const rows = page.items.map((s) => h('tr', { class: s.status === 'stuck' ? 'row-stuck' : null },
      h('td.pick-cell', { 'data-label': 'Select' }, pick(s)),
      h('td', { 'data-label': 'Saga' }, h('div', navLink(`/ui/sagas/${encodeURIComponent(s.id)}${autoRefresh() ? '' : '?refresh=off'}`, h('span.id', s.id)),
        h('div.muted.small', `${s.name}${s.mode === 'tcc' ? ' · tcc' : ''}`))),
      h('td', { 'data-label': 'Status' }, badge(s.status)),
      h('td', { 'data-label': 'Steps' }, stepDots(s.steps)),
      h('td', { 'data-label': 'Created' }, when(s.created_at)),
      h('td', { 'data-label': 'Updated' }, when(s.updated_at)),
      h('td.error-cell', { 'data-label': 'Error', title: s.error || '' }, s.error || '')));
    put(wrap, h('table.sagas', h('caption.sr-only', 'Sagas, newest first'), head, h('tbody', rows)));
    if (focused) document.getElementById(focused)?.focus();
  }
  drawBulk();
  put(pager,
    f.cursor ? navLink(listHref({ ...f, cursor: '' }), '← Newest') : h('span'),
    page.next_cursor ? navLink(listHref({ ...f, cursor: page.next_cursor }), 'Older →') : h('span'));
}

const BULK_TEXT = {
  retry: ['Retry selected', 'Retry', 'Each stuck saga sends its stuck call again, with a fresh retry budget. A saga that is not stuck answers 409 and is left as it is.'],
  abort: ['Abort selected', 'Abort', 'Each running saga stops going forward and compensates (or cancels) what was done. A saga that is not running answers 409 and is left as it is.'],
  pause: ['Pause selected', 'Pause', 'Each saga sends no new call until it is resumed (calls in flight finish); its deadline and timers wait with it.'],
  resume: ['Resume selected', 'Resume', 'Each paused saga goes on; its deadline and timers move by the time it was paused.'],
  wake: ['Wake selected', 'Wake', 'What each saga waits for (a retry\'s backoff, a delayed compensation) is called now.'],
};

/** The bar of bulk actions over the list: what is selected, and retry or abort all of it. */
function bulkBar(refresh) {
  const result = h('p.action-result', { id: 'bulk-result', role: 'status' });
  const count = h('span', { id: 'bulk-count' });
  const why = h('span.muted.small.reason', { id: 'bulk-why' });
  const buttons = Object.entries(BULK_TEXT).map(([action, [label, verb, effect]]) => {
    const button = h('button', { type: 'button', id: `bulk-${action}`, class: action === 'abort' ? 'danger' : 'primary',
      'aria-describedby': 'bulk-why' }, label);
    button.addEventListener('click', async () => {
      const ids = [...state.selected];
      const n = ids.length === 1 ? `saga ${ids[0]}` : `${ids.length} sagas`;
      const said = ids.length ? await confirmAction(`${verb} ${n}?`, effect, verb) : null;
      if (!said) return;
      for (const b of document.querySelectorAll('.bulk button')) b.disabled = true;
      const res = await api(`/v1/bulk/${action}`, 'POST', { ids, ...said.body }).catch((e) => ({ status: e.status, body: e.problem }));
      if (res.status === 200) {
        const refused = res.body.results.filter((r) => r.status !== 202);
        result.className = `action-result ${refused.length ? 'bad' : 'ok'}`;
        put(result, `${verb}: ${res.body.accepted} of ${ids.length} accepted.`,
          refused.length ? h('ul.refused', refused.map((r) => h('li', { text:
            `${r.id}: ${r.status}${r.problem && r.problem.title ? ' ' + r.problem.title : ''}: ${(r.problem && r.problem.detail) || ''}` }))) : null);
        state.selected.clear();
      } else {
        const p = res.body || {};
        result.className = 'action-result bad';
        result.textContent = `${res.status || 'No answer'}${p.title ? ' ' + p.title : ''}: ${p.detail || 'the service did not answer'}`;
      }
      await refresh();
      drawBulk(); // the refresh redraws the bar, unless it failed
    });
    return button;
  });
  const clear = h('button', { type: 'button', id: 'bulk-clear', onclick: () => {
    state.selected.clear();
    for (const box of document.querySelectorAll('input.pick')) box.checked = false;
    drawBulk();
  } }, 'Clear selection');
  return h('section.bulk', { 'aria-label': 'Act on the selected sagas' }, count, buttons, clear, why, result);
}

/** The bulk bar's count and buttons, after the selection or the token changed. */
function drawBulk() {
  const count = $('#bulk-count');
  if (!count) return;
  const n = state.selected.size;
  count.textContent = n === 1 ? '1 selected' : `${n} selected`;
  const admin = can('admin');
  for (const action of Object.keys(BULK_TEXT)) $(`#bulk-${action}`).disabled = n === 0 || n > BULK_MAX || !admin;
  $('#bulk-clear').disabled = n === 0;
  const who = state.me && state.me.name ? `the token "${state.me.name}" lacks` : 'it needs a token with';
  $('#bulk-why').textContent = n > 0 && !admin ? `Disabled: ${who} the admin scope`
    : n > BULK_MAX ? `Disabled: one action takes at most ${BULK_MAX} sagas` : '';
}

function stepDots(steps) {
  const done = steps.filter((s) => ['succeeded', 'confirmed', 'tried'].includes(s.status)).length;
  return h('span.dots', { title: steps.map((s) => `${s.name}: ${s.status}`).join('\n') },
    steps.map((s) => h('span.dot', { class: `s-${s.status}${s.stuck ? ' alarm' : ''}`, 'aria-hidden': 'true' })),
    h('span.sr-only', `${done} of ${steps.length} steps done`),
    h('span.small.muted', { 'aria-hidden': 'true' }, ` ${done}/${steps.length}`));
}

// ---------- participant services ----------

/** Each participant service this instance has seen: its breaker, its figures over the last
 * minutes, calls waiting at its gate, and an operator's pause (docs/operations.md). */
function servicesPage() {
  document.title = 'Services · saga-orchestrator';
  const result = h('p.action-result', { id: 'service-result', role: 'status' });
  const rows = h('div.table-wrap', { id: 'services' }, h('p.muted', 'Loading…'));
  const refresh = async () => {
    clearTimeout(state.timer);
    const gen = ++state.gen;
    try {
      const res = await api('/v1/services');
      if (gen !== state.gen || state.view !== view) return;
      clearError(page);
      put(rows, servicesTable(res.body.services, refresh, result));
      updated();
    } catch (e) {
      if (gen === state.gen && e.status !== 401) showError(e, page);
    }
    schedule(LIST_REFRESH_MS);
  };
  const page = h('div.list',
    h('h1', 'Participant services'),
    h('p.muted', 'A breaker opens when a service keeps answering with timeouts, refused connections or 5xx: calls to it wait (no attempt spent) until a probe succeeds, then go at a rising rate. Pause a service for a planned deploy: its calls wait on every instance until resumed.'),
    h('div.filters', refreshControls(refresh)),
    result, rows);
  put(main(), page);
  const view = { kind: 'services', refresh };
  state.view = view;
  refresh();
}

function servicesTable(services, refresh, result) {
  if (!services.length) return h('p.muted', 'No participant service called yet.');
  const admin = can('admin');
  return h('table.services',
    h('thead', h('tr', ['Service', 'Breaker', 'Calls (5 min)', 'Unknown', 'p99', 'Waiting', 'Paused', ''].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', services.map((s) => {
      const action = s.paused ? 'resume' : 'pause';
      const label = s.paused ? 'Resume' : 'Pause';
      const button = h('button', { type: 'button', id: `service-${action}-${s.service}`, class: s.paused ? 'primary' : 'secondary',
        disabled: !admin, title: admin ? null : 'needs a token with the admin scope' }, label);
      button.addEventListener('click', async () => {
        const effect = s.paused ? 'Calls to the service go again (through its breaker), on every instance.'
          : 'Every call to the service waits, on every instance, until it is resumed; calls in flight finish.';
        const said = await confirmAction(`${label} ${s.service}?`, effect, label);
        if (!said) return;
        button.disabled = true;
        const res = await api(`/v1/services/${encodeURIComponent(s.service)}/${action}`, 'POST', said.body)
          .catch((e) => ({ status: e.status, body: e.problem }));
        const p = res.body || {};
        result.className = `action-result ${res.status === 200 ? 'ok' : 'bad'}`;
        result.textContent = res.status === 200 ? `200 OK: ${s.service} ${s.paused ? 'resumed' : 'paused'}.`
          : `${res.status || 'No answer'}${p.title ? ' ' + p.title : ''}: ${p.detail || 'the service did not answer'}`;
        await refresh();
      });
      return h('tr', { id: `svc-${s.service}` },
        h('td', { 'data-label': 'Service' }, h('code', { text: s.service })),
        h('td', { 'data-label': 'Breaker' }, h('span.badge', { class: `s-${s.breaker}`, text: s.breaker.replace('_', '-') }), ' ', when(s.breaker_since)),
        h('td', { 'data-label': 'Calls (5 min)', text: String(s.calls) }),
        h('td', { 'data-label': 'Unknown', text: `${Math.round(s.unknown_rate * 100)} %` }),
        h('td', { 'data-label': 'p99', text: s.p99_ms === null ? '—' : `${s.p99_ms} ms` }),
        h('td', { 'data-label': 'Waiting', text: String(s.waiting) }),
        h('td', { 'data-label': 'Paused' }, s.paused
          ? h('span', h('span.badge.s-paused', 'paused'), ' by ', s.paused.by, ' ', when(s.paused.at), s.paused.reason ? h('span.muted', { text: `: ${s.paused.reason}` }) : null)
          : h('span.muted', 'no')),
        h('td', button));
    })));
}

// ---------- definitions ----------

function safeDecode(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

/** The named definitions (docs/api.md, "Definitions"): each one's newest version, the version
 * a start without one runs, and its steps. */
function definitionsPage() {
  document.title = 'Definitions · saga-orchestrator';
  const rows = h('div.table-wrap', { id: 'definitions' }, h('p.muted', 'Loading…'));
  const page = h('div.list',
    h('h1', 'Definitions'),
    h('p.muted', 'Named sagas, stored in versions (PUT /v1/definitions/{name}, or files of definitions.dir). A start names one and gives its payload; a saga runs the version it was started with.'),
    rows);
  put(main(), page);
  const view = { kind: 'definitions', refresh: async () => {
    const gen = ++state.gen;
    try {
      const res = await api('/v1/definitions');
      if (gen !== state.gen || state.view !== view) return;
      clearError(page);
      const items = res.body.items;
      put(rows, !items.length ? h('p.muted', 'No definition stored yet.') : h('table.definitions',
        h('thead', h('tr', ['Name', 'Latest', 'Starts run', 'Mode', 'Steps', 'Updated', 'Description'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', items.map((d) => h('tr', { id: `def-${d.name}` },
          h('td', { 'data-label': 'Name' }, navLink(`/ui/definitions/${encodeURIComponent(d.name)}`, d.name)),
          h('td', { 'data-label': 'Latest', text: `v${d.latest_version}` }),
          h('td', { 'data-label': 'Starts run' }, d.live_version ? `v${d.live_version}` : h('span.badge.s-stuck', 'all retired')),
          h('td', { 'data-label': 'Mode', text: d.mode }),
          h('td', { 'data-label': 'Steps', text: d.steps.join(' → ') }),
          h('td', { 'data-label': 'Updated' }, when(d.updated_at)),
          h('td', { 'data-label': 'Description', text: d.description || '' }))))));
      updated();
    } catch (e) {
      if (gen === state.gen && e.status !== 401) showError(e, page);
    }
  } };
  state.view = view;
  view.refresh();
}

/** One definition: its versions, the document of the one chosen, and a dry run of a start of
 * it with a payload (POST /v1/sagas?dry_run=true: nothing recorded or called). */
function definitionPage(name) {
  document.title = `${name} · definitions · saga-orchestrator`;
  const holder = h('div.saga', { id: 'definition' }, h('p.muted', 'Loading…'));
  put(main(), h('p.crumbs', navLink('/ui/definitions', '← Definitions')), holder);
  const show = async (version) => {
    const gen = ++state.gen;
    let latest;
    let chosen;
    try {
      latest = (await api(`/v1/definitions/${encodeURIComponent(name)}`)).body;
      chosen = version && version !== latest.version
        ? (await api(`/v1/definitions/${encodeURIComponent(name)}/versions/${version}`)).body
        : latest;
    } catch (e) {
      if (gen !== state.gen) return;
      if (e.status === 404) put(holder, h('h1', { text: name }), h('p.banner.bad', { role: 'alert' }, `No definition named "${name}".`));
      else if (e.status !== 401) showError(e, holder);
      return;
    }
    if (gen !== state.gen) return;
    const picker = h('select', { id: 'version-select', 'aria-label': 'Version' },
      latest.versions.map((v) => h('option', { value: String(v.version), selected: v.version === chosen.version ? '' : null },
        `v${v.version}${v.retired_at ? ' (retired)' : ''}`)));
    picker.addEventListener('change', () => show(Number(picker.value)));
    const payloadBox = h('textarea', { id: 'dry-payload', rows: '4', spellcheck: 'false', 'aria-label': 'payload' }, '{}');
    const planHolder = h('div', { id: 'dry-plan' });
    const run = h('button.primary', { type: 'button', id: 'dry-run' }, 'Dry run');
    run.addEventListener('click', async () => {
      let payload;
      try {
        payload = JSON.parse(payloadBox.value || '{}');
      } catch (e) {
        put(planHolder, h('p.banner.bad', { role: 'alert', text: `The payload is not JSON: ${e.message}` }));
        return;
      }
      run.disabled = true;
      const res = await api('/v1/sagas?dry_run=true', 'POST', { definition: name, version: chosen.version, payload })
        .catch((e) => ({ status: e.status, body: e.problem }));
      run.disabled = false;
      put(planHolder, res.status === 200 ? planView(res.body) : problemView(res));
    });
    put(holder,
      h('div.title', h('h1', h('span.id', name), ' ', picker),
        chosen.retired ? h('span.badge.s-stuck', { id: 'retired-badge' }, 'retired') : null),
      chosen.description ? h('p', { text: chosen.description }) : null,
      h('dl.summary',
        h('div', h('dt', 'Version'), h('dd', `v${chosen.version}`)),
        h('div', h('dt', 'Stored'), h('dd', when(chosen.created_at), ' by ', chosen.created_by)),
        chosen.retired ? h('div', h('dt', 'Retired'), h('dd', when(chosen.retired.at), ' by ', chosen.retired.by,
          chosen.retired.reason ? `: ${chosen.retired.reason}` : '')) : null),
      h('section', { 'aria-labelledby': 'h-dry' }, h('h2', { id: 'h-dry' }, 'Dry run'),
        h('p.muted', 'The plan of a start of this version with this payload: order, compensation, retries, deadline, and whether each endpoint\'s host resolves and accepts a connection. Nothing is recorded or called.'),
        h('label', { for: 'dry-payload' }, 'Payload'), payloadBox, h('div.buttons', run), planHolder),
      h('section', { 'aria-labelledby': 'h-doc' }, h('h2', { id: 'h-doc' }, 'Definition'),
        h('pre.json', { tabindex: '0', id: 'definition-json', 'aria-label': 'definition' }, JSON.stringify(chosen.definition, null, 2))));
    updated();
  };
  state.view = { kind: 'definition', refresh: () => show() };
  show();
}

/** A problem document's detail and every field's pointer. */
function problemView(res) {
  const p = res.body || {};
  return h('div.banner.bad', { role: 'alert', id: 'dry-problem' },
    h('p', { text: `${res.status || 'No answer'}${p.title ? ' ' + p.title : ''}: ${p.detail || ''}` }),
    (p.errors || []).length ? h('ul', p.errors.map((e) => h('li', h('code', { text: e.pointer || e.parameter || '' }), ' ', e.detail))) : null);
}

function ms(n) {
  return n >= 60000 ? `${(n / 60000).toFixed(1)} min` : n >= 1000 ? `${(n / 1000).toFixed(1)} s` : `${n} ms`;
}

/** A dry run's plan and endpoint checks. */
function planView(d) {
  const p = d.plan;
  return h('div', { id: 'plan' },
    h('p.banner', { class: d.ready ? 'ok' : 'warn', id: 'plan-ready' },
      d.ready ? 'Ready: every endpoint resolves and accepts a connection.' : 'Not ready: some endpoint does not resolve or connect (below).'),
    p.warnings.map((w) => h('p.banner.warn', { text: w })),
    h('dl.summary',
      h('div', h('dt', 'Order'), h('dd', { id: 'plan-levels', text: p.levels.map((l) => l.join(' + ')).join(' → ') })),
      h('div', h('dt', 'Undo order'), h('dd', { id: 'plan-undo', text: p.undo_levels.map((l) => l.join(' + ')).join(' → ') || 'nothing to undo' })),
      h('div', h('dt', 'Deadline'), h('dd', p.deadline_ms ? ms(p.deadline_ms) : 'none')),
      h('div', h('dt', 'Worst case forward'), h('dd', ms(p.worst_case_forward_ms)))),
    h('div.table-wrap', h('table.plan',
      h('thead', h('tr', ['Step', 'Phase', 'Calls', 'Waits', 'Worst case'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', p.steps.flatMap((s) => s.phases.map((ph) => h('tr',
        h('td', { 'data-label': 'Step', text: s.name }),
        h('td', { 'data-label': 'Phase', text: ph.phase + (ph.delay_ms ? ` (after ${ms(ph.delay_ms)})` : '') }),
        h('td', { 'data-label': 'Calls', text: `${ph.attempts} × ${ms(s.timeout_ms)}` }),
        h('td', { 'data-label': 'Waits', text: ph.backoffs_ms.map(ms).join(', ') || '—' }),
        h('td', { 'data-label': 'Worst case', text: ms(ph.worst_case_ms) }))))))),
    h('div.table-wrap', h('table.endpoints', { id: 'plan-endpoints' },
      h('thead', h('tr', ['Step', 'Phase', 'URL', 'Resolves', 'Connects'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', d.endpoints.map((e) => h('tr',
        h('td', { 'data-label': 'Step', text: e.step }),
        h('td', { 'data-label': 'Phase', text: e.phase }),
        h('td', { 'data-label': 'URL' }, h('code', { text: `${e.method} ${e.url}` })),
        h('td', { 'data-label': 'Resolves', text: e.resolves ? `yes (${e.addresses.join(', ')})` : 'no' }),
        h('td', { 'data-label': 'Connects', class: e.connects ? '' : 'bad', text: e.connects ? 'yes' : `no: ${e.error || ''}` })))))));
}

// ---------- one saga ----------

function sagaPage(id) {
  document.title = `${id} · saga-orchestrator`;
  const holder = h('div.saga', { id: 'saga' }, h('p.muted', 'Loading…'));
  put(main(),
    h('p.crumbs', navLink(state.lastList, '← Sagas')),
    holder);
  let last = null;
  let request = null; // as accepted: it never changes, so it is read once
  const refresh = async () => {
    clearTimeout(state.timer);
    const gen = ++state.gen; // an older read still in flight must not draw over this one
    let saga;
    try {
      saga = (await api(`/v1/sagas/${encodeURIComponent(id)}?include=attempts${request ? '' : ',request'}`)).body;
      if (request) saga.request = request;
      else request = saga.request;
    } catch (e) {
      if (gen !== state.gen) return;
      if (e.status === 404) {
        put(holder, h('h1', { text: id }), h('p.banner.bad', { role: 'alert' }, `No saga with id "${id}".`));
      } else if (e.status === 410 && e.problem && e.problem.purged) {
        // Retention purged it (docs/saga-log.md): what is left is its tombstone, not an error.
        const p = e.problem.purged;
        put(holder, h('h1', { text: id }),
          h('p.banner.purged', { role: 'status' },
            `${p.name} ${p.status}: ended `, when(p.finished_at), ', purged ', when(p.purged_at),
            p.archived_in ? h('span', ', archived in ', h('code', { text: p.archived_in })) : ' (not archived)',
            '. The id stays reserved until ', when(p.reserved_until), '.'));
      } else if (e.status !== 401) {
        showError(e, holder);
        schedule(SAGA_REFRESH_MS);
      }
      return;
    }
    if (gen !== state.gen) return; // the operator has moved on
    // Redraw only on a change, so that focus, open details and selections stay put.
    const key = JSON.stringify(saga);
    if (key !== last) {
      last = key;
      drawSaga(holder, saga, refresh);
    }
    clearError(holder);
    updated();
    if (!TERMINAL.has(saga.status)) schedule(SAGA_REFRESH_MS);
  };
  state.view = { kind: 'saga', refresh };
  refresh();
}

function drawSaga(holder, s, refresh) {
  const focusedId = document.activeElement && holder.contains(document.activeElement) ? document.activeElement.id : null;
  const openDetails = [...holder.querySelectorAll('details[open]')].map((d) => d.id);
  const result = holder.querySelector('#action-result');
  put(holder,
    h('div.title',
      h('h1', h('span.id', s.id), ' ', badge(s.status)),
      refreshControls(refresh)),
    s.error ? h('p.banner.saga-error', { class: s.status === 'stuck' ? 'bad' : 'warn', text: s.error }) : null,
    s.paused_at ? h('p.banner.warn', { id: 'paused-banner' }, 'Paused by an operator since ', when(s.paused_at),
      ': no new call until it is resumed; its deadline and timers wait with it.') : null,
    s.waiting_on ? h('p.banner.warn', { id: 'waiting-on', text: `A call waits: ${s.waiting_on}.` }) : null,
    h('dl.summary',
      h('div', h('dt', 'Name'), h('dd', s.name)),
      h('div', h('dt', 'Mode'), h('dd', s.mode)),
      s.definition ? h('div', h('dt', 'Definition'), h('dd', { id: 'saga-definition' },
        navLink(`/ui/definitions/${encodeURIComponent(s.definition.name)}`, `${s.definition.name} v${s.definition.version}`))) : null,
      // Started through DTM's protocol (docs/dtm.md): its steps are the branch ids.
      s.name.startsWith('dtm_')
        ? h('div', h('dt', 'DTM'), h('dd', `${s.name.slice(4)} transaction; steps are its branch ids`))
        : null,
      h('div', h('dt', 'Created'), h('dd', when(s.created_at))),
      h('div', h('dt', 'Updated'), h('dd', when(s.updated_at))),
      h('div', h('dt', 'Deadline'), h('dd', deadline(s))),
      h('div', h('dt', 'Purged'), h('dd', retention(s))),
      s.trace_id ? h('div', h('dt', 'Trace'), h('dd', trace(s))) : null),
    actions(s, refresh, result),
    timers(s),
    h('section', { 'aria-labelledby': 'h-steps' }, h('h2', { id: 'h-steps' }, 'Steps'), timeline(s)),
    h('section', { 'aria-labelledby': 'h-calls' }, h('h2', { id: 'h-calls' }, 'Calls'), calls(s)),
    h('section', { 'aria-labelledby': 'h-ops' }, h('h2', { id: 'h-ops' }, 'Operator actions'), operatorActions(s)),
    h('section', { 'aria-labelledby': 'h-payload' }, h('h2', { id: 'h-payload' }, 'Payload'), payload(s)));
  for (const id of openDetails) { const d = holder.querySelector(`#${id}`); if (d) d.open = true; }
  if (focusedId) holder.querySelector(`#${focusedId}`)?.focus();
}

/** The W3C trace of its calls (docs/tracing.md): a link into the tracing UI when
 * `tracing.trace_url` is set, else the id to search for. */
function trace(s) {
  const id = h('code', { text: s.trace_id });
  if (!s.trace_url || !/^https?:\/\//.test(s.trace_url)) return id;
  return h('a', { href: s.trace_url, target: '_blank', rel: 'noopener noreferrer', id: 'trace-link' }, id);
}

/** When retention purges the saga (docs/saga-log.md): kept, never, or a time. */
function retention(s) {
  if (s.kept) return h('span', { text: 'never: kept by an operator' });
  if (s.purge_at) return when(s.purge_at, true);
  return h('span.muted', TERMINAL.has(s.status) ? 'never (kept forever)' : 'once it has ended');
}

/** The forward phase's deadline counts down only while the saga goes forward. */
function deadline(s) {
  if (!s.deadline_at) return h('span.muted', 'none');
  if (s.status === 'running' && s.paused_at) return frozen(s);
  if (s.status === 'running') return when(s.deadline_at, true);
  return h('span.muted', { title: s.deadline_at }, `${localTime(s.deadline_at)} (no longer applies)`);
}

/** A paused saga's deadline waits with it (a resume moves it by the pause): what was left when
 * it was paused, not a countdown. */
function frozen(s) {
  const left = Date.parse(s.deadline_at) - Date.parse(s.paused_at);
  return h('span.deadline-frozen', { title: s.deadline_at },
    left > 0 ? `${span(left)} left, frozen while paused` : 'passed before the pause');
}

const ACTION_TEXT = {
  retry: ['Retry', 'The stuck call is sent again, with a fresh retry budget.'],
  abort: ['Abort', 'The saga stops going forward and compensates (or cancels) what was done.'],
  pause: ['Pause', 'No new call until it is resumed (calls in flight finish); its deadline and timers wait with it.'],
  resume: ['Resume', 'The saga goes on; its deadline and timers move by the time it was paused.'],
  wake: ['Wake', 'What the saga waits for (a retry\'s backoff, a delayed compensation) is called now.'],
  skip: ['Skip', 'The stuck step counts as done (set right by hand) and the saga goes on. Say why: it is kept with your name.'],
  edit: ['Edit', ''],
  keep: ['Keep', 'Retention never purges the saga while it is kept (recorded in its operator actions).'],
  unkeep: ['Unkeep', 'Retention purges the saga at its time again (at the next sweep if that has passed).'],
};

function actions(s, refresh, previousResult) {
  const result = previousResult || h('p.action-result', { id: 'action-result', role: 'status' });
  const buttons = (s.actions || []).map((a) => {
    const [verb, effect] = ACTION_TEXT[a.action] || [a.action, ''];
    // Skip names its step: one button per stuck step.
    const label = a.step ? `${verb} ${a.step}` : verb;
    const key = a.step ? `${a.action}-${a.step}` : a.action;
    const path = a.step ? `steps/${encodeURIComponent(a.step)}/${a.action}` : a.action;
    const allowed = a.allowed && can(a.scope);
    const why = !a.allowed ? a.reason
      : !can(a.scope) ? `the token "${state.me && state.me.name}" lacks the ${a.scope} scope`
        : null;
    const reasonId = `why-${key}`;
    const busy = `${s.id}/${key}`;
    const button = h('button', { type: 'button', id: `action-${key}`, class: ['abort', 'skip'].includes(a.action) ? 'danger' : ['keep', 'unkeep'].includes(a.action) ? 'secondary' : 'primary',
      disabled: !allowed || state.acting.has(busy), 'data-busy': busy, 'data-allowed': String(allowed),
      'aria-describedby': why ? reasonId : null }, label);
    button.addEventListener('click', async () => {
      if (state.acting.has(busy)) return;
      const said = a.action === 'edit' ? await editStep(s, a.step)
        : await confirmAction(`${label} saga ${s.id}?`, effect, label, a.action === 'skip');
      if (!said) return;
      button.disabled = true;
      state.acting.add(busy);
      const res = await (a.action === 'edit'
        ? api(`/v1/sagas/${encodeURIComponent(s.id)}/steps/${encodeURIComponent(a.step)}`, 'PATCH', said.body)
        : api(`/v1/sagas/${encodeURIComponent(s.id)}/${path}`, 'POST', said.body))
        .catch((e) => ({ status: e.status, body: e.problem }))
        .finally(() => state.acting.delete(busy));
      if (res.status === 202) {
        result.className = 'action-result ok';
        result.textContent = `202 Accepted: ${a.action}${a.step ? ' ' + a.step : ''} requested; the saga is now ${res.body.status}.`;
      } else if (res.status === 200) {
        result.className = 'action-result ok';
        result.textContent = `200 OK: ${res.body.kept ? 'kept: retention will not purge it' : 'no longer kept'}.`;
      } else {
        result.className = 'action-result bad';
        const p = res.body || {};
        result.textContent = `${res.status || 'No answer'}${p.title ? ' ' + p.title : ''}: ${p.detail || 'the service did not answer'}`;
      }
      await refresh();
      // The button on screen now (this one, or one drawn while the action was in flight) is
      // usable again as far as the saga's status and the token allow.
      const shown = document.getElementById(`action-${key}`);
      if (shown && shown.dataset.busy === busy) shown.disabled = shown.dataset.allowed !== 'true';
    });
    return h('div.action', button, why ? h('span.muted.small.reason', { id: reasonId }, `Disabled: ${why}`) : null);
  });
  return h('section.actions', { 'aria-label': 'Operator actions' }, buttons, result);
}

/** The edit dialog of a step: a new URL for any of its endpoints and the reason; answers null
 * when cancelled, else `{ body }` for `PATCH /v1/sagas/{id}/steps/{step}`. */
function editStep(s, step) {
  const dialog = $('#edit-dialog');
  const reason = $('#edit-reason');
  const ok = $('#edit-ok');
  const endpoints = s.mode === 'tcc' ? ['try', 'confirm', 'cancel'] : ['action', 'compensation'];
  $('#edit-title').textContent = `Edit step ${step} of ${s.id}`;
  const inputs = endpoints.map((ep) => h('input', { id: `edit-url-${ep}`, type: 'url', placeholder: 'unchanged', autocomplete: 'off', spellcheck: 'false' }));
  put($('#edit-fields'), endpoints.map((ep, i) => [h('label', { for: `edit-url-${ep}` }, `${ep} URL`), inputs[i]]));
  reason.value = '';
  const check = () => { ok.disabled = !reason.value.trim() || !inputs.some((x) => x.value.trim()); };
  check();
  for (const x of [reason, ...inputs]) x.addEventListener('input', check);
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => {
    ok.disabled = false;
    if (dialog.returnValue !== 'ok') return resolve(null);
    const body = { reason: reason.value.trim() };
    endpoints.forEach((ep, i) => { if (inputs[i].value.trim()) body[ep] = { url: inputs[i].value.trim() }; });
    resolve({ body });
  }, { once: true }));
}

/** Asks to confirm, with a reason (required when `needsReason`); answers null when cancelled,
 * else `{ body }`: the request body to send (`{reason}`, or none). */
function confirmAction(title, text, label, needsReason = false) {
  const dialog = $('#confirm-dialog');
  const reason = $('#confirm-reason');
  const ok = $('#confirm-ok');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-reason-label').textContent = needsReason ? 'Reason (required)' : 'Reason (optional)';
  reason.value = '';
  reason.required = needsReason;
  ok.textContent = label;
  const check = () => { ok.disabled = needsReason && !reason.value.trim(); };
  check();
  reason.addEventListener('input', check);
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => {
    reason.removeEventListener('input', check);
    ok.disabled = false;
    if (dialog.returnValue !== 'ok') return resolve(null);
    const why = reason.value.trim();
    resolve({ body: why ? { reason: why } : undefined });
  }, { once: true }));
}

/** The calls made so far in a step's current phase. */
function phaseCalls(step) {
  if (['compensation', 'cancel'].includes(step.phase)) return step.compensation_attempts;
  if (step.phase === 'confirm') return step.confirm_attempts || 0;
  return step.attempts;
}

function timers(s) {
  const items = [];
  for (const step of s.steps) {
    if (!step.next_attempt_at) continue;
    const n = phaseCalls(step);
    const what = n === 0
      ? (['compensation', 'cancel'].includes(step.phase) ? `delayed ${step.phase}` : `first ${step.phase} call`)
      : `${step.phase} retry (call ${n + 1})`;
    // A stuck saga makes no call until an operator retries it: its other timers wait too.
    const at = s.paused_at ? h('span.muted', 'held while paused')
      : s.status === 'stuck' ? h('span.muted', 'held until an operator retries') : when(step.next_attempt_at, true);
    items.push([step.next_attempt_at, h('li', h('strong', step.name), `: ${what} `, at)]);
  }
  if (s.deadline_at && s.status === 'running') {
    items.push([s.deadline_at, h('li', h('strong', 'Deadline'), `: then it ${s.mode === 'tcc' ? 'cancels' : 'compensates'} `,
      s.paused_at ? frozen(s) : when(s.deadline_at, true))]);
  }
  if (!items.length) return null;
  items.sort((a, b) => Date.parse(a[0]) - Date.parse(b[0]));
  return h('section.timers', { 'aria-labelledby': 'h-timers' }, h('h2', { id: 'h-timers' }, 'Pending timers'),
    h('ul', items.map((x) => x[1])));
}

function timeline(s) {
  const deps = s.steps.map((step) => step.depends_on || []); // resolved by the service
  const index = new Map(s.steps.map((st, i) => [st.name, i]));
  const level = [];
  const levelOf = (i) => {
    if (level[i] === undefined) {
      level[i] = -1; // cycles are refused at acceptance; this guards the recursion anyway
      level[i] = Math.max(-1, ...deps[i].map((d) => (index.has(d) ? levelOf(index.get(d)) : -1))) + 1;
    }
    return level[i];
  };
  s.steps.forEach((_, i) => levelOf(i));
  const sequence = deps.every((d, i) => (i === 0 ? d.length === 0 : d.length === 1 && d[0] === s.steps[i - 1].name));
  const columns = [];
  s.steps.forEach((step, i) => { (columns[level[i]] ||= []).push(step); });
  return h('ol.timeline', { class: sequence ? 'sequence' : 'graph', 'aria-label': sequence ? 'Steps in order' : 'Steps by dependency level' },
    columns.map((col, lv) => h('li.level', { 'aria-label': sequence ? null : `level ${lv + 1}` },
      col.map((step) => stepCard(step, sequence ? [] : deps[index.get(step.name)], s.status === 'stuck')))));
}

function stepCard(step, after, held) {
  const attempts = [`${step.attempts} ${step.phase === 'try' || step.confirm_attempts !== undefined ? 'try' : 'action'}`];
  if (step.confirm_attempts !== undefined) attempts.push(`${step.confirm_attempts} confirm`);
  attempts.push(`${step.compensation_attempts} ${step.confirm_attempts !== undefined ? 'cancel' : 'compensation'}`);
  return h('article.step', { class: `s-${step.status}${step.stuck ? ' alarm' : ''}`, 'aria-label': `step ${step.name}` },
    h('header', h('h3', step.name), badge(step.status), step.stuck ? h('span.badge.s-stuck', 'stuck') : null),
    h('dl',
      h('div', h('dt', 'Phase'), h('dd', step.phase)),
      h('div', h('dt', 'Calls'), h('dd', attempts.join(' · '))),
      h('div', h('dt', 'Service'), h('dd', step.service)),
      after.length ? h('div', h('dt', 'After'), h('dd', after.join(', '))) : null,
      step.next_attempt_at ? h('div', h('dt', 'Next call'),
        h('dd', held ? h('span.muted', 'after a retry') : when(step.next_attempt_at, true))) : null,
      h('div', h('dt', 'Updated'), h('dd', when(step.updated_at)))),
    step.last_error ? h('p.step-error', { text: step.last_error }) : null);
}

function calls(s) {
  const rows = [];
  for (const step of s.steps) for (const c of step.history || []) rows.push({ step: step.name, ...c });
  if (!rows.length) return h('p.muted', 'No calls yet.');
  rows.sort((a, b) => Date.parse(a.started_at) - Date.parse(b.started_at));
  const duration = (c) => {
    if (!c.finished_at) return 'in flight';
    const ms = Date.parse(c.finished_at) - Date.parse(c.started_at);
    // A call near its timeout: 1.9 s, not "1 s".
    return ms >= 1000 && ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : span(ms);
  };
  return h('div.table-wrap', h('table.calls',
    h('caption.sr-only', 'Every call, oldest first'),
    h('thead', h('tr', ['Time', 'Step', 'Phase', 'Call', 'HTTP', 'Outcome', 'Duration', 'Error'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', rows.map((c) => h('tr', { class: c.outcome === 'success' ? null : 'row-' + (c.outcome || 'flight') },
      h('td', { 'data-label': 'Time' }, h('time', { datetime: c.started_at, title: c.started_at }, clock(c.started_at))),
      h('td', { 'data-label': 'Step' }, c.step),
      h('td', { 'data-label': 'Phase' }, c.phase),
      h('td', { 'data-label': 'Call' }, `#${c.attempt}`),
      h('td', { 'data-label': 'HTTP' }, c.http_status === null || c.http_status === undefined ? '—' : String(c.http_status)),
      h('td', { 'data-label': 'Outcome' }, c.outcome ? badge(c.outcome) : h('span.muted', 'in flight')),
      h('td', { 'data-label': 'Duration' }, duration(c)),
      h('td.error-cell', { 'data-label': 'Error' }, c.error || ''))))));
}

function operatorActions(s) {
  const list = s.operator_actions || [];
  if (!list.length) return h('p.muted', 'None.');
  return h('div.table-wrap', h('table',
    h('thead', h('tr', ['Action', 'By', 'When', 'Why'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', list.map((a) => h('tr',
      h('td', { 'data-label': 'Action' }, a.step ? `${a.action} ${a.step}` : a.action),
      h('td', { 'data-label': 'By' }, a.by),
      h('td', { 'data-label': 'When' }, when(a.at)),
      h('td', { 'data-label': 'Why', text: a.reason || '' }))))));
}

function payload(s) {
  if (!s.request) return h('p.muted', 'Not available.');
  const pretty = (v) => JSON.stringify(v, null, 2);
  return h('div',
    h('pre.json', { tabindex: '0', id: 'payload-json', 'aria-label': 'payload' }, s.request.payload === undefined ? '(none)' : pretty(s.request.payload)),
    h('details', { id: 'request-details' },
      h('summary', { id: 'request-summary' }, 'The whole request as accepted (secret headers shown as ***)'),
      h('pre.json', { tabindex: '0', id: 'request-json', 'aria-label': 'request' }, pretty(s.request))));
}

// ---------- start ----------

function setupNavigation() {
  document.addEventListener('click', (e) => {
    const a = e.target.closest && e.target.closest('a[data-nav]');
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    go(a.getAttribute('href'));
    main().focus({ preventScroll: true });
    window.scrollTo(0, 0);
  });
  window.addEventListener('popstate', render);
  $('#jump').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('#jump-id');
    const id = input.value.trim();
    if (!id || !input.checkValidity()) return;
    input.value = '';
    go(`/ui/sagas/${encodeURIComponent(id)}`);
    main().focus({ preventScroll: true }); // focus follows to the saga, as after a link
  });
  document.addEventListener('keydown', (e) => {
    // "/" jumps to the id box, as in many consoles; not while typing elsewhere.
    if (e.key === '/' && !['INPUT', 'TEXTAREA'].includes(document.activeElement.tagName)) {
      e.preventDefault();
      $('#jump-id').focus();
    }
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.view && autoRefresh()) state.view.refresh();
  });
}

async function start() {
  setupTheme();
  setupToken();
  setupNavigation();
  setInterval(tick, 1000);
  // While the service restarts or a proxy fails, the banner says why and we ask again.
  while (!(await whoami())) {
    if ([401, 403].includes(state.meError)) {
      put(main(), h('p.muted', 'Waiting for a token…'));
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  clearError();
  render();
}

start();
