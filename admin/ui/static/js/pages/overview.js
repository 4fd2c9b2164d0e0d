// Overview: the broker's figures as cards, and charts of its rates. The
// history (GET /api/v1/metrics/history) fills the charts once; the stream
// (GET /api/v1/metrics/stream, one sample a second) moves them on and
// refreshes the cards, so an open overview makes one request a second.
import { html, useState, useEffect, useRef, Card, Notice, fmtNum, fmtBytes, fmtDuration } from '../lib.js';
import { api, keepStreaming, isAbort } from '../api.js';
import { Chart } from '../chart.js';

// value, label, seconds shown
const ranges = [['15m', '15 min', 900], ['1h', '1 hour', 3600], ['24h', '24 hours', 86400]];

// The charts: title, series, unit.
const charts = [
  ['chart-messages', 'Messages per second', [['messages_received', 'in'], ['messages_sent', 'out']], ''],
  ['chart-bytes', 'Bytes per second', [['bytes_received', 'in'], ['bytes_sent', 'out']], 'B'],
  ['chart-connections', 'Connections per second', [['connections', 'connects'], ['disconnections', 'disconnects']], ''],
  ['chart-queued', 'Queued and in flight', [['queued_messages', 'queued'], ['inflight_messages', 'in flight']], ''],
];

// History holds the points shown: times and a column per series, at most
// max points, so that a page left open does not grow.
class History {
  constructor(names, max) {
    this.names = names;
    this.max = max;
    this.time = [];
    this.cols = Object.fromEntries(names.map((n) => [n, []]));
  }
  load(h) {
    this.time = h.time.slice(-this.max);
    for (const n of this.names) this.cols[n] = (h.series[n] || []).slice(-this.max);
  }
  add(t, values) {
    if (this.time.length && t <= this.time[this.time.length - 1]) return;
    this.time.push(t);
    for (const n of this.names) this.cols[n].push(values[n] === undefined ? null : values[n]);
    if (this.time.length > this.max) {
      this.time.shift();
      for (const n of this.names) this.cols[n].shift();
    }
  }
  columns(names) {
    return [this.time, ...names.map((n) => this.cols[n] || [])];
  }
}

const maxPoints = { '15m': 900, '1h': 360, '24h': 8640 };

export function Overview() {
  const [range, setRange] = useState('15m');
  const [stats, setStats] = useState(null);
  const [error, setError] = useState(null);
  const [, setTick] = useState(0);
  const hist = useRef(null);

  useEffect(() => {
    const ctl = new AbortController();
    let names = null;
    (async () => {
      try {
        const h = await api('metrics/history?range=' + range, { signal: ctl.signal });
        names = Object.keys(h.series);
        hist.current = new History(names, maxPoints[range]);
        hist.current.load(h);
        setTick((t) => t + 1);
        await keepStreaming('metrics/stream', (name, ev) => {
          if (name !== 'sample') return;
          setStats(ev.stats);
          const p = range === '15m' ? ev : ev.coarse;
          if (p) {
            hist.current.add(p.time, p.values);
            setTick((t) => t + 1);
          }
        }, ctl.signal, setError);
      } catch (e) {
        if (!isAbort(e)) setError(e);
      }
    })();
    return () => ctl.abort();
  }, [range]);

  const st = stats;
  const dropped = st ? Object.entries(st.messages_dropped_by_reason || {}).filter(([, v]) => v > 0) : [];
  const h = hist.current;
  const span = ranges.find((r) => r[0] === range)[2];
  const dropNames = h ? h.names.filter((n) => n.startsWith('dropped_')) : [];
  return html`<div>
    <div class="toolbar"><h1 class="grow">Overview</h1>
      <select aria-label="Range" value=${range} onChange=${(e) => setRange(e.target.value)} data-testid="range">
        ${ranges.map(([v, label]) => html`<option value=${v}>${label}</option>`)}
      </select>
    </div>
    <${Notice} error=${error}/>
    <div class="cards">
      <${Card} id="card-connected" label="Clients connected" value=${st ? fmtNum(st.clients_connected) : '…'} sub=${st && 'max ' + fmtNum(st.clients_maximum)}/>
      <${Card} id="card-sessions" label="Sessions" value=${st ? fmtNum(st.sessions) : '…'} sub=${st && fmtNum(st.sessions_expired) + ' expired'}/>
      <${Card} id="card-subscriptions" label="Subscriptions" value=${st ? fmtNum(st.subscriptions) : '…'}/>
      <${Card} id="card-retained" label="Retained" value=${st ? fmtNum(st.retained_messages) : '…'}/>
      <${Card} id="card-queued" label="Queued" value=${st ? fmtNum(st.queued_messages) : '…'} sub=${st && fmtBytes(st.message_memory_bytes) + ' of messages'}/>
      <${Card} id="card-inflight" label="In flight" value=${st ? fmtNum(st.inflight_messages) : '…'}/>
      <${Card} id="card-dropped" label="Dropped" value=${st ? fmtNum(st.messages_dropped) : '…'}
        sub=${dropped.length ? dropped.map(([k, v]) => k + ' ' + fmtNum(v)).join(', ') : st && 'none'}/>
      <${Card} id="card-uptime" label="Uptime" value=${st ? fmtDuration(st.uptime_seconds) : '…'} sub=${st && 'version ' + st.version}/>
      <${Card} id="card-memory" label="Memory" value=${st ? fmtBytes(st.memory_bytes) : '…'}
        sub=${st && fmtBytes(st.heap_bytes) + ' heap, ' + fmtNum(st.goroutines) + ' goroutines'}/>
    </div>
    ${h && html`<div class="charts">
      ${charts.map(([id, title, series, unit]) => html`<${Chart} key=${id + range} id=${id} title=${title} unit=${unit} span=${span}
        labels=${series.map((s) => s[1])} columns=${h.columns(series.map((s) => s[0]))}/>`)}
      <${Chart} key=${'drops' + range} id="chart-dropped" title="Dropped per second, by reason" span=${span}
        labels=${dropNames.map((n) => n.slice(8))} columns=${h.columns(dropNames)}/>
    </div>`}
  </div>`;
}
