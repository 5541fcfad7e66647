/* touchstream live page: polls the /v1 API with a read key and draws plain HTML and SVG.
 *
 * No dependencies, no build step. Every value from the server is put in the page as text
 * (textContent / attributes), never as markup; names that users chose (segments,
 * touchpoints, rules, studies) are wrapped in <bdi dir="auto"> so right-to-left and
 * mixed scripts keep their order.
 */
'use strict';

(() => {
  const KEY_STORE = 'touchstream.readKey';
  const PREFS_STORE = 'touchstream.prefs';
  // Trends come from the server's series (GET /v1/scores/series): per minute over the
  // last hour for the short windows, per hour over the day or the week for the long ones.
  const TRENDS = {
    '15m': { step: '1m', span: 3600e3, name: 'per minute, last hour' },
    '1h': { step: '1m', span: 3600e3, name: 'per minute, last hour' },
    '24h': { step: '1h', span: 86400e3, name: 'per hour, last 24 hours' },
    '7d': { step: '1h', span: 7 * 86400e3, name: 'per hour, last 7 days' },
  };
  const OVERVIEW_TRENDS = { '15m': '1m', '1h': '1h' };  // the cards: a minute and an hour
  const SMALL_N = 30;         // fewer answers than this: drawn as uncertain (dashed)
  const RECENT_SHOWN = 10;    // pending and resolved alerts listed
  const DETECTION_SHOWN = 10; // series listed in the detection panel, closest to paging
  const DESTINATION_TEXT = {  // shares: where the top's lost answers went (GET /v1/detection)
    bottom: 'to the lowest answers', middle: 'to the middle answers', rest: 'from the top',
  };
  const query = new URLSearchParams(location.search);
  const EVERY_MS = Math.max(1, Number(query.get('every')) || 5) * 1000;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ DOM helpers

  function put(el, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }
  const h = (tag, attrs, ...kids) => put(document.createElement(tag), attrs, kids);
  const svg = (tag, attrs, ...kids) => put(document.createElementNS(SVG_NS, tag), attrs, kids);
  /** Text somebody chose (a segment, a touchpoint, a rule): isolated, direction by content. */
  const name = (text) => h('bdi', { dir: 'auto' }, text);

  // ------------------------------------------------------------------ formatting

  const METRIC_NAMES = {
    csat: 'CSAT', nps: 'NPS', ces: 'CES', outcome: 'Resolution', sentiment: 'Sentiment',
  };
  const METRIC_NOTES = {
    csat: 'share satisfied (4–5 of 5)', nps: 'promoters − detractors, points',
    ces: 'mean effort score, 1–7', outcome: 'share of contacts resolved',
    sentiment: 'mean, −1 to 1',
  };
  const DIM_NAMES = { journey_type: 'journey type' };
  const WINDOW_NAMES = { '15m': '15 min', '1h': '1 hour', '24h': '24 hours', '7d': '7 days' };
  const nf = new Intl.NumberFormat(undefined);

  function metricName(metric) {
    const rating = /^rating:(\d+)-(\d+)$/.exec(metric);
    if (rating) return `Rating ${rating[1]}–${rating[2]}`;
    return METRIC_NAMES[metric] || metric;
  }
  function metricNote(metric) {
    const rating = /^rating:(\d+)-(\d+)$/.exec(metric);
    if (rating) return `mean on a ${rating[1]}–${rating[2]} scale`;
    return METRIC_NOTES[metric] || '';
  }
  function metricOrder(metric) {
    const i = ['csat', 'nps', 'ces', 'outcome', 'sentiment'].indexOf(metric);
    return i < 0 ? 10 : i;
  }
  const byMetric = (a, b) => metricOrder(a.metric) - metricOrder(b.metric)
    || a.metric.localeCompare(b.metric);
  function unitOf(metric) {
    if (metric === 'csat' || metric === 'outcome') return 'ratio';
    if (metric === 'nps') return 'points';
    return 'mean';
  }
  const minus = (text) => text.replace('-', '−');
  function fmt(unit, v) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    if (unit === 'ratio') return `${(v * 100).toFixed(1)}%`;
    if (unit === 'points') return minus((v > 0 ? '+' : '') + v.toFixed(1));
    return minus(v.toFixed(2));
  }
  /** A difference in the metric's units: percentage points for shares. */
  function fmtDiff(unit, d) {
    if (d === null || d === undefined || Number.isNaN(d)) return '–';
    const sign = d > 0 ? '+' : '';
    if (unit === 'ratio') return minus(`${sign}${(d * 100).toFixed(1)}\u00a0pts`);
    if (unit === 'points') return minus(`${sign}${d.toFixed(1)}\u00a0pts`);
    return minus(sign + d.toFixed(2));
  }
  const fmtRange = (unit, lo, hi) => `${fmt(unit, lo)} to ${fmt(unit, hi)}`;
  function fmtP(p) {
    if (p === null || p === undefined) return '–';
    return p < 0.001 ? '< 0.001' : p.toFixed(3);
  }
  function fmtTime(iso) {
    if (!iso) return '–';
    const at = new Date(iso);
    const today = new Date().toDateString() === at.toDateString();
    return today
      ? at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : at.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }
  /** A span of time; dates shown where they are not today, on both ends if they differ. */
  function fmtSpan(from, to) {
    if (!from || !to) return `${fmtTime(from)}–${fmtTime(to)}`;
    const a = new Date(from);
    const b = new Date(to);
    const hm = { hour: '2-digit', minute: '2-digit' };
    const full = { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' };
    const today = new Date().toDateString();
    if (a.toDateString() === today && b.toDateString() === today) {
      return `${a.toLocaleTimeString([], hm)}–${b.toLocaleTimeString([], hm)}`;
    }
    if (a.toDateString() === b.toDateString()) {
      return `${a.toLocaleString([], full)}–${b.toLocaleTimeString([], hm)}`;
    }
    return `${a.toLocaleString([], full)} to ${b.toLocaleString([], full)}`;
  }
  function fmtAgo(iso) {
    if (!iso) return '';
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} days ago`;
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined) return '–';
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }
  function scopeKey(scope) {
    return Object.entries(scope || {}).map(([k, v]) => `${k}=${v}`).join('&');
  }
  /** A scope as text nodes: "channel chat · segment enterprise", values isolated. */
  function scopeLabel(scope, withDims = true) {
    const parts = Object.entries(scope || {});
    if (!parts.length) return [h('span', { text: 'overall' })];
    const out = [];
    parts.forEach(([dim, value], i) => {
      if (i) out.push(' · ');
      if (withDims) out.push(h('span', { class: 'dim', text: `${DIM_NAMES[dim] || dim} ` }));
      out.push(name(value));
    });
    return out;
  }
  function scopeText(scope) {
    const parts = Object.entries(scope || {});
    return parts.length ? parts.map(([d, v]) => `${d} ${v}`).join(', ') : 'overall';
  }

  // ------------------------------------------------------------------ standing and charts

  /** Where a score stands against its target, taking its interval into account. */
  function standing(sc) {
    if (!sc || !sc.n || sc.value === null) {
      return { cls: 'empty', label: 'no answers' };
    }
    if (sc.target === null || sc.target === undefined) return { cls: 'none', label: 'no target' };
    if (sc.low !== null && sc.low >= sc.target) return { cls: 'above', label: '▲ above target' };
    if (sc.value >= sc.target) return { cls: 'meets', label: '● meets target' };
    if (sc.high !== null && sc.high >= sc.target) return { cls: 'short', label: '◐ just under' };
    return { cls: 'below', label: '▼ below target' };
  }
  function badge(sc) {
    const st = standing(sc);
    const small = sc && sc.n > 0 && sc.n < SMALL_N;
    return h('span', { class: `badge st-${st.cls}${small ? ' small-n' : ''}`,
      title: small ? `only ${sc.n} answers: uncertain` : null }, st.label);
  }

  function domainOf(metric, unit, values) {
    if (unit === 'ratio') return [0, 1];
    if (unit === 'points') return [-100, 100];
    if (metric === 'ces') return [1, 7];
    if (metric === 'sentiment') return [-1, 1];
    const rating = /^rating:(\d+)-(\d+)$/.exec(metric);
    if (rating) return [Number(rating[1]), Number(rating[2])];
    const finite = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
    if (!finite.length) return [0, 1];
    const lo = Math.min(...finite);
    const hi = Math.max(...finite);
    return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
  }

  /** The score on its whole scale: track, 95% interval band, the score, the target tick. */
  function intervalBar(metric, sc) {
    const unit = sc.unit || unitOf(metric);
    const [d0, d1] = domainOf(metric, unit, [sc.low, sc.high, sc.value, sc.target]);
    const W = 200;
    const H = 20;
    const x = (v) => 4 + ((Math.min(d1, Math.max(d0, v)) - d0) / (d1 - d0)) * (W - 8);
    const st = standing(sc);
    const small = sc.n > 0 && sc.n < SMALL_N;
    const label = sc.n
      ? `${fmt(unit, sc.value)}, 95% interval ${fmtRange(unit, sc.low, sc.high)}, ${sc.n} answers`
        + (sc.target !== null && sc.target !== undefined ? `, target ${fmt(unit, sc.target)}` : '')
      : 'no answers';
    const chart = svg('svg', { class: `bar st-${st.cls}${small ? ' small-n' : ''}`,
      viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label });
    chart.append(svg('rect', { class: 'track', x: 4, y: 8, width: W - 8, height: 4, rx: 2 }));
    if (sc.n && sc.low !== null && sc.high !== null) {
      chart.append(svg('rect', { class: 'band', x: x(sc.low), y: 3,
        width: Math.max(2, x(sc.high) - x(sc.low)), height: 14, rx: 3 }));
    }
    if (sc.target !== null && sc.target !== undefined) {
      chart.append(svg('line', { class: 'target', x1: x(sc.target), x2: x(sc.target), y1: 0, y2: H }));
    }
    if (sc.n && sc.value !== null) {
      chart.append(svg('circle', { class: 'dot', cx: x(sc.value), cy: 10, r: 4 }));
    }
    return chart;
  }

  /** A score's series from the server: the interval as a band, the score as a line. */
  function sparkline(trend, unit) {
    const usable = trend.points.filter((p) => p.v !== null);
    if (usable.length < 2) return h('span', { class: 'spark-empty muted small', text: 'no trend yet' });
    const W = 120;
    const H = 32;
    const P = 3;
    const lows = usable.map((p) => (p.lo === null ? p.v : p.lo));
    const highs = usable.map((p) => (p.hi === null ? p.v : p.hi));
    let lo = Math.min(...lows);
    let hi = Math.max(...highs);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const step = (W - 2 * P) / (Math.max(usable.length, 12) - 1);
    const x = (i) => W - P - (usable.length - 1 - i) * step;
    const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
    const line = usable.map((p, i) => `${x(i).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
    const band = usable.map((p, i) => `${x(i).toFixed(1)},${y(highs[i]).toFixed(1)}`)
      .concat(usable.map((p, i) => `${x(i).toFixed(1)},${y(lows[i]).toFixed(1)}`).reverse())
      .join(' ');
    const first = usable[0];
    const last = usable[usable.length - 1];
    const label = `trend ${trend.name}: ${fmt(unit, first.v)} then ${fmt(unit, last.v)}`;
    return svg('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label,
      'data-points': usable.length },
      svg('polygon', { class: 'spark-band', points: band }),
      svg('polyline', { class: 'spark-line', points: line }),
      svg('circle', { class: 'spark-dot', cx: x(usable.length - 1), cy: y(last.v), r: 2.5 }));
  }

  // ------------------------------------------------------------------ state

  let key = sessionStorage.getItem(KEY_STORE) || '';
  const prefs = Object.assign(
    { scope: 'channel', metric: 'csat', window: '1h', period: 'day', journeyType: 'all' },
    JSON.parse(sessionStorage.getItem(PREFS_STORE) || '{}'),
  );
  const trends = new Map();       // "window|scope|metric" -> {name, points: [{v, lo, hi, n}]}
  const rendered = new Map();     // section -> JSON of what it shows (re-render on change)
  const openDetails = new Set();  // ids of <details> the reader opened
  let firingSeen = null;          // ids of firing alerts at the previous poll
  let timer = null;
  let paused = false;
  let inFlight = false;
  let again = false;
  let generation = 0;             // bumps when the key changes: late answers are dropped

  /** Keep the series of one answer of GET /v1/scores/series as the trends of ``window``. */
  function keepTrends(window, name, answer) {
    for (const s of answer.items) {
      trends.set(`${window}|${scopeKey(s.scope)}|${s.metric}`, {
        name, points: s.points.map((p) => ({ v: p.value, lo: p.low, hi: p.high, n: p.n })),
      });
    }
  }
  const seriesOf = (window, item) => trends.get(`${window}|${scopeKey(item.scope)}|${item.metric}`)
    || { name: '', points: [] };
  const since = (ms) => enc(new Date(Date.now() - ms).toISOString());

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}${detail ? `: ${detail}` : ''}`);
      this.status = status;
    }
  }

  async function api(path) {
    const ctrl = new AbortController();
    const stop = setTimeout(() => ctrl.abort(), 15000);
    try {
      const res = await fetch(path, {
        headers: { Authorization: `Bearer ${key}`, Accept: 'application/json' },
        cache: 'no-store', credentials: 'omit', signal: ctrl.signal,
      });
      if (!res.ok) {
        let detail = '';
        try {
          const body = await res.json();
          detail = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
        } catch (_) { /* not JSON */ }
        throw new ApiError(res.status, detail);
      }
      return await res.json();
    } finally {
      clearTimeout(stop);
    }
  }

  const enc = encodeURIComponent;

  async function poll() {
    if (!key || paused) return;
    if (inFlight) { again = true; return; }
    inFlight = true;
    clearTimeout(timer);
    const q = { ...prefs };  // what this poll asks for, even if the reader changes it meanwhile
    const asked = generation;
    const continuous = ['15m', '1h', '24h', '7d'].includes(q.window);
    const asks = {
      o15: api('/v1/scores?window=15m&limit=100'),
      o1h: api('/v1/scores?window=1h&limit=100'),
      scope: api(`/v1/scores?family=continuous&window=${enc(q.window)}&scope=${enc(q.scope)}`
        + `&metric=${enc(q.metric)}&limit=1000`),
      periodic: api(`/v1/scores?family=periodic&window=${enc(q.period)}&limit=100`),
      alerts: api('/v1/alerts?limit=200'),
      detection: api(`/v1/detection?limit=${DETECTION_SHOWN}`),
      pulses: api('/v1/pulses'),
      journeys: api(`/v1/scores/journeys?journey_type=${enc(q.journeyType)}`),
      t15: api(`/v1/scores/series?step=${OVERVIEW_TRENDS['15m']}&since=${since(TRENDS['15m'].span)}`),
      t1h: api(`/v1/scores/series?step=${OVERVIEW_TRENDS['1h']}&since=${since(TRENDS['24h'].span)}`),
    };
    if (continuous) {
      const t = TRENDS[q.window];
      asks.tscope = api(`/v1/scores/series?step=${t.step}&scope=${enc(q.scope)}`
        + `&metric=${enc(q.metric)}&since=${since(t.span)}`);
    }
    const names = Object.keys(asks);
    const settled = await Promise.allSettled(Object.values(asks));
    const got = {};
    const failed = {};
    settled.forEach((r, i) => {
      if (r.status === 'fulfilled') got[names[i]] = r.value;
      else failed[names[i]] = r.reason;
    });
    inFlight = false;
    if (asked !== generation) { again = false; if (key) poll(); return; }

    const refused = Object.values(failed).find((e) => e instanceof ApiError && (e.status === 401 || e.status === 403));
    if (refused) {
      clearData();
      askForKey(refused.status === 401
        ? 'That key was not accepted (401). Enter a valid key.'
        : 'That key lacks the read scope (403). Enter a key with the read scope.');
      return;
    }
    trends.clear();
    if (got.t15) keepTrends('15m', TRENDS['15m'].name, got.t15);
    if (got.t1h) keepTrends('1h', TRENDS['24h'].name, got.t1h);
    if (got.tscope) keepTrends(`scope:${q.window}`, TRENDS[q.window].name, got.tscope);

    section('overview', got.o15 && got.o1h ? [got.o15, got.o1h, got.t15, got.t1h] : null,
      failed.o15 || failed.o1h, () => renderOverview(got.o15.items, got.o1h.items));
    section('alerts', got.alerts, failed.alerts, () => renderAlerts(got.alerts.items));
    section('detection', got.detection, failed.detection, () => renderDetection(got.detection));
    section('breakdown', got.scope ? [q, got.scope, got.tscope] : null, failed.scope,
      () => renderBreakdown(got.scope.items, q));
    section('periodic', got.periodic ? [q.period, got.periodic] : null, failed.periodic,
      () => renderPeriodic(got.periodic.items, q));
    section('pulses', got.pulses, failed.pulses, () => renderPulses(got.pulses.items));
    section('journeys', got.journeys, failed.journeys, () => renderJourneys(got.journeys));
    if (got.o15 && updateMetricChoices(got.o15.items.concat(got.o1h ? got.o1h.items : []))) {
      again = true;
    }

    reportStatus(got, failed);
    if (again) { again = false; poll(); return; }
    schedule();
  }


  function schedule() {
    clearTimeout(timer);
    if (key && !paused) timer = setTimeout(poll, EVERY_MS);
  }

  /** Re-render one section only when what it shows changed (keeps focus and screen
   *  readers quiet); show the error in place and keep the last good data otherwise. */
  function section(id, data, error, draw) {
    const body = $(`${id}-body`);
    body.removeAttribute('aria-busy');
    const old = body.querySelector(':scope > .section-error');
    if (old) old.remove();
    if (data) {
      const json = JSON.stringify(data, (k, v) => (k === 'computed_at' ? undefined : v));
      if (rendered.get(id) !== json) {
        rendered.set(id, json);
        // Keep the reader's place: which control had focus, how far tables were scrolled.
        const focusables = () => [...body.querySelectorAll('a, button, select, input, summary, [tabindex]')];
        const focused = focusables().indexOf(document.activeElement);
        const scrolled = [...body.querySelectorAll('.scroll')].map((el) => el.scrollLeft);
        body.replaceChildren(...[draw()].flat(Infinity).filter((n) => n !== null && n !== undefined));
        [...body.querySelectorAll('.scroll')].forEach((el, i) => { el.scrollLeft = scrolled[i] || 0; });
        if (focused >= 0) {
          const target = focusables()[focused];
          if (target) target.focus({ preventScroll: true });
        }
        body.querySelectorAll('details[data-id]').forEach((d) => {
          if (openDetails.has(d.dataset.id)) d.open = true;
          d.addEventListener('toggle', () => {
            if (d.open) openDetails.add(d.dataset.id); else openDetails.delete(d.dataset.id);
          });
        });
      }
    } else if (error instanceof ApiError && error.status === 404) {
      // Nothing of that kind exists here (say, a scope this server does not score).
      rendered.delete(id);
      body.replaceChildren(h('p', { class: 'section-error', text: `Not available on this server (${error.message}).` }));
    } else if (error) {
      // Keep the last good data, marked as such.
      body.prepend(h('p', { class: 'section-error', text: `Could not refresh this part (${error.message || error}); retrying.` }));
    }
  }

  function reportStatus(got, failed) {
    const firing = got.alerts ? got.alerts.items.filter((a) => a.state === 'firing') : [];
    const errors = Object.keys(failed).length;
    let message;
    if (!Object.keys(got).length) {
      message = 'Cannot reach the service; retrying.';
    } else {
      message = firing.length
        ? `${firing.length} alert${firing.length > 1 ? 's' : ''} firing.`
        : 'No alert firing.';
      if (firingSeen) {
        const fresh = firing.filter((a) => !firingSeen.has(a.id));
        if (fresh.length) {
          message = `New alert firing: ${fresh.map((a) => `${metricName(a.metric)} ${a.kind}, ${scopeText(a.scope)}`).join('; ')}. ${message}`;
        }
      }
      if (errors) message += ` ${errors} part${errors > 1 ? 's' : ''} failed to load.`;
    }
    if (got.alerts) firingSeen = new Set(firing.map((a) => a.id));
    if ($('status').textContent !== message) $('status').textContent = message;
    document.body.classList.toggle('stale', errors > 0);
    const overall = got.o15 && got.o15.items.length ? got.o15.items[0] : null;
    const latest = got.o15 ? got.o15.items.map((i) => i.latest_event_at).filter(Boolean).sort().pop() : null;
    $('updated').textContent = `Updated ${new Date().toLocaleTimeString()} · every ${EVERY_MS / 1000} s`
      + (latest ? ` · latest event ${fmtTime(latest)} (${fmtAgo(latest)})` : '')
      + (overall ? '' : ' · no answers in the last 15 minutes');
  }

  function updateMetricChoices(items) {
    const metrics = [...new Set(items.map((i) => i.metric))]
      .sort((a, b) => byMetric({ metric: a }, { metric: b }));
    if (!metrics.length) return false;
    const select = $('metric');
    const have = [...select.options].map((o) => o.value).join(',');
    if (have === metrics.join(',')) return false;
    const changed = !metrics.includes(prefs.metric);
    if (changed) { prefs.metric = metrics.includes('csat') ? 'csat' : metrics[0]; savePrefs(); }
    select.replaceChildren(...metrics.map((m) => h('option', { value: m, selected: m === prefs.metric }, metricName(m))));
    select.value = prefs.metric;
    return changed;
  }

  // ------------------------------------------------------------------ sections

  function scoreRow(windowName, item) {
    const unit = item.unit;
    return h('div', { class: `row st-${standing(item).cls}`, 'data-window': windowName },
      h('div', { class: 'row-head' },
        h('span', { class: 'win', text: WINDOW_NAMES[windowName] || windowName }),
        h('span', { class: 'value', 'data-value': item.value, text: fmt(unit, item.value) }),
        badge(item)),
      intervalBar(item.metric, item),
      h('p', { class: 'meta small' },
        h('span', { class: 'n', 'data-n': item.n }, `n = ${nf.format(item.n)}`),
        item.n ? ` · 95% ${fmtRange(unit, item.low, item.high)}` : '',
        item.target !== null && item.target !== undefined
          ? ` · target ${fmt(unit, item.target)} · gap ${fmtDiff(unit, item.gap)}` : ''),
      h('div', { class: 'trend' }, h('span', { class: 'muted small', text: 'trend' }),
        sparkline(seriesOf(windowName, item), unit)));
  }

  function renderOverview(items15, items1h) {
    const metrics = [...new Set(items15.concat(items1h).map((i) => i.metric))]
      .sort((a, b) => byMetric({ metric: a }, { metric: b }));
    if (!metrics.length) return h('p', { class: 'muted', text: 'No answers in the last hour yet.' });
    return metrics.map((metric) => {
      const rows = [['15m', items15], ['1h', items1h]]
        .map(([w, list]) => [w, list.find((i) => i.metric === metric)])
        .filter(([, item]) => item);
      const now = standing(rows[0][1]).cls;
      return h('article', { class: `card st-${now}`, 'data-scope': '', 'data-metric': metric },
        h('h3', {}, metricName(metric), ' ', h('span', { class: 'note', text: metricNote(metric) })),
        rows.map(([w, item]) => scoreRow(w, item)));
    });
  }

  function alertSummary(alert) {
    const ev = alert.evidence;
    const unit = unitOf(alert.metric);
    const m = metricName(alert.metric);
    if (!ev) return `${m}: no evidence recorded.`;
    if (ev.baseline_score !== null && ev.baseline_score !== undefined) {
      return `${m} ${fmt(unit, ev.window_score)} (n = ${nf.format(ev.window_n)}, `
        + `${fmtSpan(ev.window_start, ev.window_end)}) against `
        + `${fmt(unit, ev.baseline_score)} before (n = ${nf.format(ev.baseline_n)}, `
        + `${fmtSpan(ev.baseline_start, ev.baseline_end)}): `
        + `down ${fmtDiff(unit, ev.effect).replace('+', '')}`
        + (ev.q !== null && ev.q !== undefined ? `, q ${fmtP(ev.q)}` : '');
    }
    if (ev.target !== null && ev.target !== undefined) {
      return `${m} ${fmt(unit, ev.window_score)} (n = ${nf.format(ev.window_n)}, 95% `
        + `${fmtRange(unit, ev.window_low, ev.window_high)}) against target ${fmt(unit, ev.target)}`;
    }
    if (ev.cusum !== null && ev.cusum !== undefined) {
      return `${m} drifting down: CUSUM ${ev.cusum.toFixed(2)} (last bucket `
        + `${fmt(unit, ev.window_score)}, n = ${nf.format(ev.window_n)})`;
    }
    return `${m} ${fmt(unit, ev.window_score)} (n = ${nf.format(ev.window_n)})`;
  }

  function attribution(alert) {
    const a = alert.attribution;
    if (a === null || a === undefined) return null;
    const rows = Array.isArray(a) ? a : Object.entries(a).map(([k, v]) => ({ [k]: v }));
    if (!rows.length) return null;
    return h('div', { class: 'attribution' },
      h('h4', { class: 'small', text: 'Where the drop comes from' }),
      h('ul', {}, rows.slice(0, 8).map((row) => h('li', {},
        typeof row === 'object' && row !== null
          ? Object.entries(row).flatMap(([k, v], i) => [
            i ? ' · ' : '', h('span', { class: 'dim', text: `${k} ` }),
            typeof v === 'object' && v !== null
              ? scopeLabel(v)
              : (typeof v === 'number' ? (Number.isInteger(v) ? nf.format(v) : v.toFixed(3)) : name(String(v))),
          ])
          : name(String(row))))));
  }

  function evidenceList(alert) {
    const ev = alert.evidence || {};
    const dl = h('dl', { class: 'evidence' });
    for (const [k, v] of Object.entries(ev)) {
      if (v === null || v === undefined) continue;
      const shown = typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(4) : String(v);
      dl.append(h('dt', { text: k.replace(/_/g, ' ') }), h('dd', { text: shown }));
    }
    return h('details', { 'data-id': `ev-${alert.id}` }, h('summary', { text: 'All evidence' }), dl);
  }

  function alertCard(alert) {
    return h('article', {
      class: `alert sev-${alert.severity} state-${alert.state}${firingSeen && alert.state === 'firing' && !firingSeen.has(alert.id) ? ' new' : ''}`,
      'data-alert-id': alert.id, 'data-rule': alert.rule, 'data-state': alert.state,
    },
    h('h3', {},
      h('span', { class: `sev sev-${alert.severity}` }, name(alert.severity)), ' ',
      `${metricName(alert.metric)} ${alert.kind}`, ' · ', scopeLabel(alert.scope)),
    h('p', { class: 'summary', text: alertSummary(alert) }),
    h('p', { class: 'meta small' },
      'owner ', name(alert.owner), ' · rule ', name(alert.rule), ' · ',
      alert.firing_at ? `firing since ${fmtTime(alert.firing_at)}`
        : `pending since ${fmtTime(alert.started_at)}`),
    attribution(alert),
    evidenceList(alert));
  }

  function renderAlerts(items) {
    const sevRank = { critical: 0, warning: 1, info: 2 };
    const firing = items.filter((a) => a.state === 'firing')
      .sort((a, b) => (sevRank[a.severity] ?? 3) - (sevRank[b.severity] ?? 3)
        || String(b.firing_at).localeCompare(String(a.firing_at)));
    const others = items.filter((a) => a.state !== 'firing')
      .sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
    const out = [h('h3', { class: 'sub', text: `Firing (${firing.length})` })];
    out.push(firing.length
      ? h('div', { id: 'alerts-firing', class: 'alert-list' }, firing.map(alertCard))
      : h('p', { id: 'alerts-firing', class: 'ok', text: 'Nothing firing.' }));
    out.push(h('h3', { class: 'sub', text: 'Pending and recently resolved' }));
    out.push(others.length
      ? h('ul', { id: 'alerts-recent', class: 'recent' }, others.slice(0, RECENT_SHOWN).map((a) => h('li', {
        'data-alert-id': a.id, 'data-state': a.state },
      h('span', { class: `pill state-${a.state}`, text: a.state }), ' ',
      `${metricName(a.metric)} ${a.kind} · `, scopeLabel(a.scope), ' · ',
      h('span', { class: 'muted', text: a.state === 'resolved'
        ? `resolved ${fmtTime(a.resolved_at)}` : `since ${fmtTime(a.started_at)}` }),
      h('details', { 'data-id': `sum-${a.id}` }, h('summary', { text: 'evidence' }),
        h('p', { class: 'small', text: alertSummary(a) })))))
      : h('p', { class: 'muted', text: 'None.' }));
    if (others.length > RECENT_SHOWN) {
      out.push(h('p', { class: 'muted small', text: `and ${others.length - RECENT_SHOWN} more (see /v1/alerts)` }));
    }
    return out;
  }

  function table(caption, head, rows, extra) {
    return h('div', { class: 'scroll', role: 'region', tabindex: 0, 'aria-label': caption },
      h('table', extra || {},
        h('caption', { class: 'visually-hidden', text: caption }),
        h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows)));
  }

  function renderBreakdown(items, q) {
    const dims = q.scope.split(',').map((d) => DIM_NAMES[d] || d).join(' × ');
    $('breakdown-h').textContent = `Scores by ${dims}`;
    if (!items.length) return h('p', { class: 'muted', text: `No ${metricName(q.metric)} answers by ${dims} in this window.` });
    const continuous = ['15m', '1h', '24h', '7d'].includes(q.window);
    // Worst standing first; by name within a standing, so rows stay put between updates.
    const rank = { below: 0, short: 1, meets: 2, above: 3, none: 4, empty: 5 };
    const sorted = [...items].sort((a, b) => rank[standing(a).cls] - rank[standing(b).cls]
      || scopeKey(a.scope).localeCompare(scopeKey(b.scope)));
    const rows = sorted.map((it) => h('tr', {
      class: `st-${standing(it).cls}${it.n < SMALL_N ? ' small-n' : ''}`,
      'data-scope': scopeKey(it.scope), 'data-metric': it.metric },
    h('th', { scope: 'row' }, scopeLabel(it.scope, false)),
    h('td', {}, h('span', { class: 'value', text: fmt(it.unit, it.value) }), ' ', badge(it)),
    h('td', { class: 'bar-cell' }, intervalBar(it.metric, it)),
    h('td', { class: 'num' }, h('span', { class: 'n', 'data-n': it.n, text: nf.format(it.n) })),
    h('td', { class: 'num', text: it.target === null ? '–' : fmtDiff(it.unit, it.gap) }),
    continuous ? h('td', {}, sparkline(seriesOf(`scope:${q.window}`, it), it.unit)) : null));
    return table(`${metricName(q.metric)} by ${dims}, last ${WINDOW_NAMES[q.window] || q.window}`,
      ['Name', 'Score', '95% interval and target', 'n', 'Gap', continuous ? 'Trend' : null]
        .filter(Boolean), rows, { class: 'scores' });
  }

  /** Hours as words: "now", "about 40 min", "about 3.5 h", "about 4 days". */
  function fmtHours(hours) {
    if (hours <= 0) return 'now';
    if (hours < 1.5) return `about ${Math.max(1, Math.round(hours * 60))}\u00a0min`;
    if (hours < 48) return `about ${hours.toFixed(1)}\u00a0h`;
    return `about ${nf.format(Math.round(hours / 24))}\u00a0days`;
  }

  /** Evidence toward the threshold: a bar on 0 to 1.25, the tick at 1 (pages). */
  function evidenceBar(item) {
    const W = 200;
    const H = 20;
    const top = 1.25;
    const x = (v) => 4 + (Math.min(top, Math.max(0, v)) / top) * (W - 8);
    const ev = item.evidence;
    const label = `evidence ${ev.toFixed(2)} of 1.00 that pages`
      + (item.holds ? ': past the threshold' : '');
    return svg('svg', { class: `bar evbar${item.holds ? ' holds' : ''}`, viewBox: `0 0 ${W} ${H}`,
      role: 'img', 'aria-label': label },
    svg('rect', { class: 'track', x: 4, y: 6, width: W - 8, height: 8, rx: 3 }),
    svg('rect', { class: 'fill', x: 4, y: 6, width: Math.max(0, x(ev) - 4), height: 8, rx: 3 }),
    svg('line', { class: 'target', x1: x(1), x2: x(1), y1: 0, y2: H }));
  }

  function decisionText(item) {
    if (item.holds || item.decision_hours === 0) return 'pages now: the evidence is past the threshold';
    const rate = item.per_hour > 0 ? ` at ${nf.format(Math.round(item.per_hour))} answers/h` : '';
    if (item.decision_hours === null || item.decision_hours === undefined) {
      return `none: no drop building up${rate}`;
    }
    return `${fmtHours(item.decision_hours)}${rate}`;
  }

  function renderDetection(data) {
    const items = data.items || [];
    const rules = data.sequential_rules;
    if (Array.isArray(rules) && !rules.length) {
      return [
        h('p', { id: 'detection-none', class: 'muted', text: 'No series is watched by a '
          + 'sequential rule, so there is no evidence to show here. Every drop rule uses the '
          + 'window test: it compares the last hour with the 7 days before at '
          + 'each evaluation and keeps no running evidence.' }),
        h('p', { class: 'muted small' }, 'To watch series here, set ', h('code', { text: '"test": "sequential"' }),
          ' on a drop rule in the detection configuration (', h('code', { text: 'TOUCHSTREAM_DETECTION_CONFIG' }),
          '; see docs/alerting.md, “The sequential drop test”). It tests a series once its '
          + 'baseline holds answers.'),
      ];
    }
    if (!items.length) {
      return h('p', { id: 'detection-none', class: 'muted' },
        Array.isArray(rules)
          ? ['No series to show yet: the sequential rule', rules.length > 1 ? 's ' : ' ',
            rules.flatMap((r, i) => [i ? ', ' : '', name(r)]), ' watch no answers so far.']
          : 'No series is watched by a sequential rule.');
    }
    const rows = items.map((it, i) => {
      const unit = unitOf(it.metric);
      const attrs = { 'data-scope': scopeKey(it.scope), 'data-metric': it.metric, 'data-rule': it.rule,
        'data-rank': i, class: it.tested ? (it.holds ? 'holds' : null) : 'untested' };
      const head = [
        h('th', { scope: 'row' }, scopeLabel(it.scope)),
        h('td', {}, metricName(it.metric), h('span', { class: 'muted small' }, ' · rule ', name(it.rule))),
      ];
      if (!it.tested) {
        return h('tr', attrs, head,
          h('td', { colspan: 3, class: 'muted', text: `not tested: ${it.reason || 'no reason given'}` }));
      }
      return h('tr', { ...attrs, 'data-evidence': String(it.evidence) }, head,
        h('td', { class: 'bar-cell' },
          h('span', { class: 'evidence value', text: it.evidence.toFixed(2) }),
          h('span', { class: 'muted small', text: it.holds ? ' ≥ 1.00: pages' : ' of 1.00' }),
          evidenceBar(it)),
        h('td', {},
          h('span', { class: 'shift', text: it.shift > 0 ? fmtDiff(unit, -it.shift) : '–' }),
          it.shift > 0 && DESTINATION_TEXT[it.destination]
            ? h('span', { class: 'destination muted small', text: ` ${DESTINATION_TEXT[it.destination]}` }) : null,
          h('span', { class: 'muted small', text: it.change_start
            ? ` since ${fmtTime(it.change_start)} (${nf.format(Math.round(it.change_n))} answers)` : '' })),
        h('td', { class: 'decision', text: decisionText(it) }));
    });
    const rest = (data.total || items.length) - items.length;
    return [
      table('Series watched by sequential drop rules, closest to paging first',
        ['Scope', 'Metric', 'Evidence (1.00 pages)', 'Estimated drop', 'Time to a decision'],
        rows, { class: 'detection' }),
      rest > 0 ? h('p', { id: 'detection-rest', class: 'muted small',
        text: `and ${nf.format(rest)} more series further from paging (see /v1/detection)` }) : null,
    ];
  }

  function overlap(a, b) {
    return a && b && a.low !== null && b.low !== null && a.low <= b.high && b.low <= a.high;
  }

  function changeCell(unit, diff, current, previous) {
    if (diff === null || diff === undefined) return h('td', { class: 'num', text: '–' });
    const unclear = overlap(current, previous);
    const arrow = diff > 0 ? '▲' : diff < 0 ? '▼' : '=';
    return h('td', { class: `num change ${unclear ? 'unclear' : diff > 0 ? 'up' : 'down'}` },
      `${arrow}\u00a0${fmtDiff(unit, diff)}`,
      unclear ? h('span', { class: 'muted small', text: ' (intervals overlap)' }) : null);
  }

  function renderPeriodic(items, q) {
    const period = q.period;
    if (!items.length) return h('p', { class: 'muted', text: 'No answers this period yet.' });
    const label = items[0].window.label;
    const rows = [...items].sort(byMetric).map((it) => h('tr', { 'data-metric': it.metric },
      h('th', { scope: 'row', text: metricName(it.metric) }),
      h('td', { class: 'num' }, fmt(it.unit, it.value), h('span', { class: 'muted small', text: ` n\u00a0${nf.format(it.n)}` })),
      h('td', { class: 'num' }, it.previous && it.previous.n ? fmt(it.unit, it.previous.value) : '–',
        it.previous && it.previous.n ? h('span', { class: 'muted small', text: ` n\u00a0${nf.format(it.previous.n)}` }) : null),
      changeCell(it.unit, it.change, it, it.previous)));
    return [
      h('p', { class: 'muted small', text: `This ${period}: ${label} (so far), against the ${period} before, overall.` }),
      table(`This ${period} against the last`, ['Metric', `This ${period}`, `Last ${period}`, 'Change'], rows),
    ];
  }

  function renderPulses(items) {
    if (!items.length) return h('p', { class: 'muted', text: 'No pulse studies. Start one with POST /v1/pulses (admin key).' });
    const running = items.filter((p) => p.state === 'running');
    const ended = items.filter((p) => p.state !== 'running');
    const study = (p) => h('article', { class: 'pulse', 'data-pulse-id': p.pulse_id, 'data-state': p.state },
      h('h3', {}, name(p.name), ' ', h('span', { class: `pill state-${p.state}`, text: p.state })),
      h('p', { class: 'meta small' },
        Object.keys(p.filter).length
          ? Object.entries(p.filter).flatMap(([dim, vals], i) => [i ? ' · ' : '',
            h('span', { class: 'dim', text: `${DIM_NAMES[dim] || dim} ` }),
            vals.flatMap((v, j) => [j ? ', ' : '', name(v)])])
          : 'all events',
        ` · study ${fmtSpan(p.start, p.end)}, baseline ${fmtSpan(p.baseline_start, p.baseline_end)}`),
      p.results.length
        ? table(`Pulse study ${p.name} against its baseline`, ['Metric', 'Study', 'Baseline', 'Difference'],
          [...p.results].sort(byMetric).map((r) => h('tr', { 'data-metric': r.metric },
            h('th', { scope: 'row', text: metricName(r.metric) }),
            h('td', { class: 'num' }, fmt(r.study.unit, r.study.value),
              h('span', { class: 'muted small', text: ` n\u00a0${nf.format(r.study.n)}` })),
            h('td', { class: 'num' }, fmt(r.baseline.unit, r.baseline.value),
              h('span', { class: 'muted small', text: ` n\u00a0${nf.format(r.baseline.n)}` })),
            changeCell(r.study.unit, r.difference, r.study, r.baseline))))
        : h('p', { class: 'muted small', text: 'No answers yet.' }));
    return [
      running.length ? running.map(study) : h('p', { class: 'muted', text: 'No study running.' }),
      ended.length ? h('details', { 'data-id': 'pulses-ended' },
        h('summary', { text: `Ended studies (${ended.length})` }), ended.map(study)) : null,
    ];
  }

  function renderJourneys(data) {
    const select = $('journey-type');
    const types = ['all', ...data.journey_types];
    if ([...select.options].map((o) => o.value).join('\n') !== types.join('\n')) {
      select.replaceChildren(...types.map((t) => h('option', { value: t, dir: 'auto', text: t })));
      select.value = types.includes(prefs.journeyType) ? prefs.journeyType : 'all';
    }
    const bands = Object.entries(data.by_channel_count);
    const W = 320;
    const H = 150;
    const base = 120;
    const y = (v) => base - (Math.max(0, Math.min(100, v)) / 100) * (base - 10);
    const chart = svg('svg', { class: 'journeys', viewBox: `0 0 ${W} ${H}`, role: 'img',
      'aria-label': 'Journey score (0 to 100) by number of channels: '
        + bands.map(([b, s]) => `${b}: ${s.score === null ? 'no journeys' : s.score.toFixed(1)}`).join(', ') });
    [0, 50, 100].forEach((t) => chart.append(
      svg('line', { class: 'grid', x1: 30, x2: W - 4, y1: y(t), y2: y(t) }),
      svg('text', { class: 'axis', x: 26, y: y(t) + 4, 'text-anchor': 'end' }, String(t))));
    bands.forEach(([band, s], i) => {
      const cx = 30 + (i + 0.5) * ((W - 34) / bands.length);
      if (s.n && s.score !== null) {
        chart.append(svg('rect', { class: `jbar${s.n < SMALL_N ? ' small-n' : ''}`, x: cx - 22, y: y(s.score), width: 44, height: base - y(s.score), rx: 3 }));
        if (s.low !== null && s.high !== null) {
          chart.append(svg('line', { class: 'whisker', x1: cx, x2: cx, y1: y(s.high), y2: y(s.low) }),
            svg('line', { class: 'whisker', x1: cx - 6, x2: cx + 6, y1: y(s.high), y2: y(s.high) }),
            svg('line', { class: 'whisker', x1: cx - 6, x2: cx + 6, y1: y(s.low), y2: y(s.low) }));
        }
        const top = Math.min(y(s.score), s.high === null ? Infinity : y(s.high));
        chart.append(svg('text', { class: 'barlabel', x: cx, y: top - 4, 'text-anchor': 'middle' }, s.score.toFixed(0)));
      }
      chart.append(svg('text', { class: 'axis', x: cx, y: base + 16, 'text-anchor': 'middle' },
        `${band} channel${band === '1' ? '' : 's'}`));
    });
    const rows = bands.map(([band, s]) => h('tr', { 'data-band': band },
      h('th', { scope: 'row', text: band }),
      h('td', { class: 'num', text: s.score === null ? '–' : s.score.toFixed(1) }),
      h('td', { class: 'num', text: s.low === null ? '–' : `${s.low.toFixed(1)} to ${s.high.toFixed(1)}` }),
      h('td', { class: 'num' }, h('span', { class: 'n', 'data-n': s.n, text: nf.format(s.n) })),
      h('td', { class: 'num', text: fmtSeconds(s.mean_duration_seconds) })));
    return [
      chart,
      table('Journey scores by number of channels', ['Channels', 'Score (0–100)', '95% interval', 'Journeys', 'Mean duration'], rows),
      h('p', { class: 'muted small', text: `${nf.format(data.open_journeys)} journeys still open.` }),
    ];
  }

  // ------------------------------------------------------------------ controls

  function savePrefs() { sessionStorage.setItem(PREFS_STORE, JSON.stringify(prefs)); }

  function showSession(on) {
    $('key-form').hidden = on;
    $('session').hidden = !on;
  }

  function askForKey(message) {
    key = '';
    sessionStorage.removeItem(KEY_STORE);
    clearTimeout(timer);
    showSession(false);
    $('key-error').textContent = message || '';
    $('status').textContent = message || 'Enter a read key to see the scores.';
    const input = $('key');
    input.value = '';
    if (message) input.focus();
  }

  function clearData() {
    generation += 1;
    rendered.clear();
    trends.clear();
    firingSeen = null;
    for (const id of ['overview', 'alerts', 'detection', 'breakdown', 'periodic', 'pulses', 'journeys']) {
      $(`${id}-body`).replaceChildren();
    }
    $('updated').textContent = '';
  }

  function start() {
    showSession(true);
    $('key-error').textContent = '';
    $('status').textContent = 'Loading…';
    poll();
  }

  function init() {
    for (const [id, pref] of [['scope', 'scope'], ['window', 'window'], ['period', 'period'], ['metric', 'metric'], ['journey-type', 'journeyType']]) {
      const select = $(id);
      if ([...select.options].some((o) => o.value === prefs[pref])) select.value = prefs[pref];
      select.addEventListener('change', () => {
        prefs[pref] = select.value;
        savePrefs();
        poll();
      });
    }
    $('key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const value = $('key').value.trim();
      if (!value) return;
      key = value;
      sessionStorage.setItem(KEY_STORE, key);
      $('key').value = '';
      clearData();
      start();
    });
    $('forget').addEventListener('click', () => {
      clearData();
      askForKey('');
      $('key').focus();
    });
    $('pause').addEventListener('click', () => {
      paused = !paused;
      $('pause').setAttribute('aria-pressed', String(paused));
      $('pause').textContent = paused ? 'Resume updates' : 'Pause updates';
      $('status').textContent = paused ? 'Updates paused.' : 'Updates resumed.';
      if (paused) clearTimeout(timer); else poll();
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && key && !paused) poll();
    });
    if (key) start(); else showSession(false);
  }

  init();
})();
