// evorec dashboard: looks a user up through the /v1 API (read key in sessionStorage) and draws
// their timeline, interest forecast, recommendations and explanations, plus the population view.
// No build step, no framework: plain DOM + Plotly (served by the service itself).
// Every API failure becomes a readable message in the page; nothing here throws to the console.
'use strict';

(function () {
  const KEY_STORE = 'evorec.dashboard.key';
  const DAY = 86400;
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf',
    '#bcbd22', '#393b79', '#ad494a', '#637939', '#8c6d31', '#7b4173', '#3182bd', '#e6550d'];
  const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ['lasso2d', 'select2d'] };
  const BASE_LAYOUT = {
    margin: { l: 56, r: 16, t: 16, b: 48 }, font: { size: 12 },
    paper_bgcolor: '#fff', plot_bgcolor: '#fff', legend: { orientation: 'h', y: -0.2 },
  };

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const state = { caps: null, user: null, lookup: 0, explain: 0, colors: new Map() };

  // -- small helpers -----------------------------------------------------------------------

  function getKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ''; } catch (e) { return ''; }
  }

  function setKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage disabled: the key lives only in the field */ }
    $('api-key').value = key || '';
  }

  // Plotly reads a few HTML-like tags and entities in labels: show ids literally.
  function plain(s) {
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }

  function colorOf(cat) {
    if (cat === 'other') return '#b0b7bf';
    if (cat === '(unknown)') return '#d5d9de';
    if (!state.colors.has(cat)) state.colors.set(cat, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(cat);
  }

  function pct(x) { return (100 * x).toFixed(x < 0.1 ? 1 : 0) + '%'; }
  function day(ts) { return new Date(ts * 1000).toISOString().slice(0, 10); }

  function show(el, text, kind) {
    el.textContent = text || '';
    el.hidden = !text;
    if (kind !== undefined) el.classList.toggle('info', kind === 'info');
  }

  function td(text, cls) {
    const c = document.createElement('td');
    c.textContent = text;
    if (cls) c.className = cls;
    return c;
  }

  function plot(id, traces, layout) {
    const div = $(id);
    if (typeof window.Plotly === 'undefined') {
      div.textContent = 'Charts are unavailable: plotly.min.js did not load.';
      return;
    }
    try {
      div.hidden = false;
      window.Plotly.react(div, traces, Object.assign({}, BASE_LAYOUT, layout || {}), PLOT_CONFIG);
    } catch (e) {
      console.warn('evorec dashboard: chart failed', e);
      div.textContent = 'This chart could not be drawn.';
    }
  }

  function unplot(id) {
    const div = $(id);
    if (typeof window.Plotly !== 'undefined') {
      try { window.Plotly.purge(div); } catch (e) { /* nothing drawn */ }
    }
    div.textContent = '';
    div.hidden = true;
  }

  // -- the API -----------------------------------------------------------------------------

  function describe(status, detail) {
    if (status === 401) return 'The API key was not accepted (' + detail + '): paste a valid read key above.';
    if (status === 403) return 'This API key may not read this (' + detail + ').';
    if (status === 404) return 'Not found: ' + detail + '.';
    if (status === 422) return 'The service refused the request: ' + detail + '.';
    if (status === 503) return 'Not available on this service: ' + detail + '.';
    return 'The service answered ' + status + ': ' + detail + '.';
  }

  // GET a /v1 path with the key; resolves to {ok, status, data} or {ok: false, status, detail, message}; never rejects.
  async function api(path) {
    const key = getKey();
    if (!key) return { ok: false, status: 0, detail: 'no key', message: 'Paste a read API key above first.' };
    let res;
    try {
      res = await fetch(path, { headers: { Authorization: 'Bearer ' + key, Accept: 'application/json' }, cache: 'no-store' });
    } catch (e) {
      return { ok: false, status: 0, detail: String(e), message: 'The service did not answer (' + e.message + ').' };
    }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (res.ok) return { ok: true, status: res.status, data: body };
    let detail = res.statusText || 'error';
    if (body && typeof body.detail === 'string') detail = body.detail;
    else if (body && body.detail) detail = JSON.stringify(body.detail);
    return { ok: false, status: res.status, detail: detail, message: describe(res.status, detail) };
  }

  // What the service can answer (also checks the key); null with the message shown on failure.
  async function loadCapabilities() {
    const status = $('key-status');
    const r = await api('/v1/capabilities');
    if (!r.ok) {
      state.caps = null;
      status.textContent = r.message;
      status.classList.add('error');
      return null;
    }
    state.caps = r.data;
    const c = r.data;
    status.classList.remove('error');
    status.textContent = 'Key accepted. Model: ' + (c.model_version || 'none loaded') + '; interest forecaster: ' +
      (c.forecaster ? 'horizons ' + c.horizons.join(', ') : 'not loaded') + '.';
    return c;
  }

  // -- user view ---------------------------------------------------------------------------

  async function lookup(userId) {
    const seq = ++state.lookup;
    const msg = $('user-message');
    $('user-panels').hidden = true;
    $('explain-card').hidden = true;
    if (!userId) { show(msg, 'Enter a user id.', 'error'); return; }
    if (!getKey()) { show(msg, 'Paste a read API key above first.', 'error'); return; }
    show(msg, 'Loading ' + userId + ' ...', 'info');
    const caps = await loadCapabilities();
    if (seq !== state.lookup) return;
    if (!caps) { show(msg, $('key-status').textContent, 'error'); return; }
    const u = await api('/v1/users/' + enc(userId));
    if (seq !== state.lookup) return;
    if (!u.ok) {
      show(msg, u.status === 404
        ? 'Unknown user "' + userId + '": this service has no events stored for that id.'
        : u.message, 'error');
      return;
    }
    state.user = userId;
    $('user-summary').textContent = userId + ': ' + u.data.events + ' events from ' + day(u.data.first_ts) +
      ' to ' + day(u.data.last_ts) + ' (UTC).';
    $('user-panels').hidden = false;  // before drawing: charts take their size from visible boxes
    await Promise.all([loadTimeline(userId, seq), loadForecast(userId, caps, seq), loadRecommendations(userId, caps, seq)]);
    if (seq === state.lookup) show(msg, '');
  }

  // Stacked areas of event counts per category and period (day, week or month by the span).
  async function loadTimeline(userId, seq) {
    const note = $('timeline-note');
    const r = await api('/v1/users/' + enc(userId) + '/events?limit=10000');
    if (seq !== state.lookup) return;
    if (!r.ok) { show(note, r.message); unplot('chart-timeline'); return; }
    const events = r.data.events;
    show(note, events.length >= r.data.limit ? 'Showing the latest ' + r.data.limit + ' events.' : '');
    if (!events.length) { unplot('chart-timeline'); return; }
    const first = events[0].ts, last = events[events.length - 1].ts;
    const unit = last - first <= 120 * DAY ? 'day' : last - first <= 3 * 365 * DAY ? 'week' : 'month';
    const bucketOf = (ts) => {
      const d = new Date(ts * 1000);
      if (unit === 'month') return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
      const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
      return unit === 'week' ? start - ((d.getUTCDay() + 6) % 7) * DAY * 1000 : start;  // weeks start on Monday
    };
    const next = (b) => {
      if (unit === 'month') { const d = new Date(b); return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1); }
      return b + (unit === 'week' ? 7 : 1) * DAY * 1000;
    };
    const buckets = [];
    for (let b = bucketOf(first); b <= bucketOf(last); b = next(b)) buckets.push(b);
    const slot = new Map(buckets.map((b, i) => [b, i]));
    const totals = new Map();
    for (const e of events) {
      const c = e.category_id == null ? '(unknown)' : e.category_id;
      totals.set(c, (totals.get(c) || 0) + 1);
    }
    const cats = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a));
    const shown = cats.slice(0, cats.length > 9 ? 8 : 9);
    const keep = new Set(shown);
    if (cats.length > shown.length) shown.push('other');
    const counts = new Map(shown.map((c) => [c, new Array(buckets.length).fill(0)]));
    for (const e of events) {
      const c = e.category_id == null ? '(unknown)' : e.category_id;
      counts.get(keep.has(c) ? c : 'other')[slot.get(bucketOf(e.ts))] += 1;
    }
    const x = buckets.map((b) => new Date(b).toISOString().slice(0, 10));
    const area = buckets.length >= 3;  // an area needs a few points; bars otherwise
    const traces = shown.map((c) => Object.assign({
      name: plain(c), x: x, y: counts.get(c), hovertemplate: '%{y} events<extra>' + plain(c) + '</extra>',
    }, area
      ? { type: 'scatter', mode: 'lines', stackgroup: 'events', line: { width: 0.5, color: colorOf(c) } }
      : { type: 'bar', marker: { color: colorOf(c) } }));
    plot('chart-timeline', traces, {
      barmode: 'stack', xaxis: { type: 'date', title: { text: 'per ' + unit } }, yaxis: { title: { text: 'events' }, rangemode: 'tozero' },
    });
  }

  async function loadForecast(userId, caps, seq) {
    const note = $('forecast-note');
    const drift = $('forecast-drift');
    drift.textContent = '';
    if (!caps.forecaster) {
      show(note, 'No interest forecaster is loaded on this service (start it with EVOREC_SERVE_FORECAST_RUN=RUN_DIR): no forecast to show.');
      unplot('chart-forecast');
      return;
    }
    const r = await api('/v1/users/' + enc(userId) + '/interests?top=8');
    if (seq !== state.lookup) return;
    if (!r.ok) { show(note, r.message); unplot('chart-forecast'); return; }
    const doc = r.data;
    const labels = Object.keys(doc.forecasts);
    // the categories that matter now or at some horizon, largest first (tiny shares only add clutter)
    const peak = new Map();
    const see = (x) => peak.set(x.category_id, Math.max(peak.get(x.category_id) || 0, x.share));
    doc.current.forEach(see);
    labels.forEach((h) => doc.forecasts[h].categories.forEach(see));
    const cats = [...peak.keys()].filter((c) => peak.get(c) >= 0.005).sort((a, b) => peak.get(b) - peak.get(a)).slice(0, 8);
    if (!cats.length) {
      show(note, 'The forecaster knows none of this user\'s categories: nothing to forecast.');
      unplot('chart-forecast');
      return;
    }
    show(note, '');
    const pick = (list, c, field) => { const x = list.find((y) => y.category_id === c); return x ? x[field] : 0; };
    const traces = [{
      type: 'bar', name: 'now', x: cats.map(plain), y: cats.map((c) => pick(doc.current, c, 'share')),
      marker: { color: '#4b5563' }, hovertemplate: '%{x}: %{y:.1%} now<extra></extra>',
    }];
    labels.forEach((h, j) => {
      const list = doc.forecasts[h].categories;
      traces.push({
        type: 'bar', name: 'next ' + h, x: cats.map(plain), y: cats.map((c) => pick(list, c, 'share')),
        customdata: cats.map((c) => pick(list, c, 'p_engage')),
        marker: { color: PALETTE[j % PALETTE.length] },
        hovertemplate: '%{x}: %{y:.1%} of next ' + h + ', P(engage) %{customdata:.0%}<extra></extra>',
      });
    });
    plot('chart-forecast', traces, { barmode: 'group', yaxis: { tickformat: '.0%', title: { text: 'share' } } });
    labels.forEach((h) => {
      const f = doc.forecasts[h];
      const li = document.createElement('li');
      let text = 'next ' + h + ': ' + f.drift.label + ' (shift ' + Number(f.drift.shift).toFixed(2) + '), P(a new interest) ' + pct(f.p_emerging);
      if (f.drift.fading_category) text += ', fading: ' + f.drift.fading_category;
      li.textContent = text;
      drift.appendChild(li);
    });
  }

  async function loadRecommendations(userId, caps, seq) {
    const note = $('recs-note');
    const table = $('recs-table');
    const body = table.tBodies[0];
    body.textContent = '';
    $('recs-meta').textContent = '';
    if (!caps.recommendations) {
      table.hidden = true;
      show(note, 'No recommender model is loaded on this service (start it with --run RUN_DIR).');
      return;
    }
    const r = await api('/v1/users/' + enc(userId) + '/recommendations?k=10');
    if (seq !== state.lookup) return;
    if (!r.ok) { table.hidden = true; show(note, r.message); return; }
    const doc = r.data;
    const fallback = doc.fallback;
    $('recs-meta').textContent = 'model ' + doc.model_version + '; ' + doc.history_used + ' events of history used; fallback: ' +
      (fallback || 'none');
    let text = '';
    if (fallback) text = 'Fallback (' + fallback + '): none of this user\'s events is an item the model knows, so these are the most popular items; there is nothing to explain.';
    else if (doc.unknown_items_skipped) text = doc.unknown_items_skipped + ' events on items the model does not know were skipped.';
    show(note, text);
    doc.items.forEach((it, i) => {
      const tr = document.createElement('tr');
      tr.dataset.item = it.item_id;
      tr.append(td(String(i + 1)), td(it.item_id), td(it.category_id == null ? '' : it.category_id), td(it.score.toFixed(3), 'num'));
      const cell = document.createElement('td');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'small secondary explain';
      b.textContent = 'Explain';
      if (fallback) { b.disabled = true; b.title = 'a popularity fallback has no history to attribute to'; }
      cell.appendChild(b);
      tr.appendChild(cell);
      if (!fallback) tr.addEventListener('click', () => explain(userId, it.item_id, tr));  // the button's click bubbles here
      body.appendChild(tr);
    });
    table.hidden = !doc.items.length;
    if (!doc.items.length) show(note, 'No item to recommend.');
  }

  async function explain(userId, itemId, row) {
    const seq = ++state.explain;
    const card = $('explain-card');
    const note = $('explain-note');
    for (const tr of $('recs-table').tBodies[0].rows) tr.classList.toggle('selected', tr === row);
    card.hidden = false;
    $('explain-item').textContent = itemId;
    $('explain-meta').textContent = '';
    show(note, 'Computing the attribution ...');
    const r = await api('/v1/users/' + enc(userId) + '/explanations?item_id=' + enc(itemId));
    if (seq !== state.explain || userId !== state.user) return;
    if (!r.ok) { show(note, r.message); unplot('chart-explain-category'); unplot('chart-explain-age'); return; }
    const e = r.data;
    show(note, '');
    $('explain-meta').textContent = 'score ' + e.score.toFixed(3) + ' vs ' + e.baseline_score.toFixed(3) +
      ' without the history; ' + e.method.replace(/_/g, ' ') + ' over ' + e.events.length + ' events';
    const color = (w) => (w >= 0 ? '#2ca02c' : '#d62728');
    const cats = e.by_category.slice(0, 12).reverse();  // largest at the top of a horizontal bar chart
    plot('chart-explain-category', [{
      type: 'bar', orientation: 'h', x: cats.map((g) => g.weight), y: cats.map((g) => plain(g.category_id)),
      customdata: cats.map((g) => g.share), marker: { color: cats.map((g) => color(g.weight)) },
      hovertemplate: '%{y}: %{x:.3f} (%{customdata:.0%} of all attribution)<extra></extra>',
    }], { title: { text: 'by category', font: { size: 13 } }, margin: { l: 120, r: 16, t: 32, b: 40 }, xaxis: { title: { text: 'attribution' }, zeroline: true } });
    plot('chart-explain-age', [{
      type: 'bar', x: e.by_age.map((g) => g.age), y: e.by_age.map((g) => g.weight),
      customdata: e.by_age.map((g) => g.share), marker: { color: e.by_age.map((g) => color(g.weight)) },
      hovertemplate: '%{x}: %{y:.3f} (%{customdata:.0%})<extra></extra>',
    }], { title: { text: 'by age of the event', font: { size: 13 } }, margin: { l: 56, r: 16, t: 32, b: 40 }, yaxis: { title: { text: 'attribution' }, zeroline: true } });
  }

  // -- population view ---------------------------------------------------------------------

  async function loadPopulation() {
    const note = $('population-note');
    const panels = $('population-panels');
    if (!getKey()) { panels.hidden = true; show(note, 'Paste a read API key above to see the population.'); return; }
    const caps = state.caps || await loadCapabilities();
    if (!caps) { panels.hidden = true; show(note, $('key-status').textContent); return; }
    if (!caps.forecaster) {
      panels.hidden = true;
      show(note, 'No interest forecaster is loaded on this service (start it with EVOREC_SERVE_FORECAST_RUN=RUN_DIR): no population view.');
      return;
    }
    const horizon = caps.horizons.includes('30d') ? '30d' : caps.horizons[caps.horizons.length - 1];
    const [p, s] = await Promise.all([api('/v1/population?top=10'), api('/v1/segments?horizon=' + enc(horizon) + '&k=6')]);
    if (!p.ok) { panels.hidden = true; show(note, p.message); return; }
    const doc = p.data;
    if (doc.withheld) { panels.hidden = true; show(note, 'Population view withheld: ' + doc.reason + '.'); return; }
    show(note, doc.n_users + ' forecast users at ' + day(doc.cutoff) + ' (the end of the forecaster\'s data).', 'info');
    panels.hidden = false;
    const cats = doc.categories;
    const x = cats.map((c) => plain(c.category_id));
    const traces = [{
      type: 'bar', name: 'now', x: x, y: cats.map((c) => c.current_share), marker: { color: '#4b5563' },
      hovertemplate: '%{x}: %{y:.1%} now<extra></extra>',
    }];
    doc.horizons.forEach((h, j) => traces.push({
      type: 'bar', name: 'next ' + h, x: x, y: cats.map((c) => c.forecast[h].share),
      customdata: cats.map((c) => c.forecast[h].expected_users), marker: { color: PALETTE[j % PALETTE.length] },
      hovertemplate: '%{x}: %{y:.1%} of next ' + h + ', ~%{customdata:.0f} users engage<extra></extra>',
    }));
    plot('chart-population', traces, { barmode: 'group', yaxis: { tickformat: '.0%', title: { text: 'mean share' } } });
    renderSegments(s, horizon);
  }

  function renderSegments(r, horizon) {
    const note = $('segments-note');
    const table = $('segments-table');
    const body = table.tBodies[0];
    body.textContent = '';
    $('segments-meta').textContent = 'users grouped by the trajectory of their interests to the next ' + horizon;
    if (!r.ok) { table.hidden = true; show(note, r.message); return; }
    const doc = r.data;
    if (doc.withheld || !doc.segments.length) {
      table.hidden = true;
      show(note, 'Segments withheld: ' + (doc.reason || 'no segment has at least ' + doc.min_size + ' users') + '.');
      return;
    }
    show(note, '');
    const names = (list) => list.map((g) => g.category).join(', ');
    for (const sgm of doc.segments) {
      const tr = document.createElement('tr');
      tr.append(td(sgm.name), td(String(sgm.size), 'num'), td(pct(sgm.share), 'num'), td(names(sgm.top_now)),
        td(names(sgm.top_forecast)), td(names(sgm.gains)));
      body.appendChild(tr);
    }
    table.hidden = false;
  }

  // -- wiring ------------------------------------------------------------------------------

  function guard(fn) {
    return (...args) => Promise.resolve().then(() => fn(...args)).catch((e) => {
      console.warn('evorec dashboard:', e);
      show($('user-message'), 'Something went wrong in the page: ' + (e && e.message ? e.message : e), 'error');
    });
  }

  function start() {
    // #key=...&user=... pre-fills (a fragment never reaches the server); then it leaves the address bar
    const frag = new URLSearchParams(window.location.hash.replace(/^#/, ''));
    if (frag.get('key')) setKey(frag.get('key').trim());
    else $('api-key').value = getKey();
    const user = frag.get('user');
    if (user) $('user-id').value = user;
    if (window.location.hash) history.replaceState(null, '', window.location.pathname + window.location.search);

    const onKey = guard(async () => {
      state.caps = null;
      await loadCapabilities();
      await loadPopulation();
    });
    $('key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      setKey($('api-key').value.trim());
      onKey();
    });
    $('key-clear').addEventListener('click', () => {
      setKey('');
      state.caps = null;
      $('key-status').textContent = 'Key forgotten.';
      $('key-status').classList.remove('error');
    });
    const go = guard(() => lookup($('user-id').value.trim()));
    $('user-form').addEventListener('submit', (ev) => { ev.preventDefault(); go(); });
    $('population-load').addEventListener('click', guard(async () => { state.caps = null; await loadPopulation(); }));

    if (getKey()) {
      guard(async () => {
        await loadCapabilities();
        if (user) await lookup(user);
        await loadPopulation();
      })();
    } else {
      $('key-status').textContent = 'Paste a read API key (evorec keys create --role read) and press "Use key".';
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
