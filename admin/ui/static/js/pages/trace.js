// Live trace: follow a client id, a topic filter or an address
// (GET /api/v1/trace, Server-Sent Events) and show its events as they
// come, with pause, clear and download as JSON lines. The page keeps the
// last maxRows events; the server caps each trace's rate and buffer.
import { html, useState, useEffect, useRef, Notice, fmtNum } from '../lib.js';
import { stream, query, isAbort } from '../api.js';

const maxRows = 1000; // shown; older ones are let go
const maxKept = 10000; // kept for the download

export function Trace() {
  const [kind, setKind] = useState('topic');
  const [value, setValue] = useState('');
  const [payload, setPayload] = useState(true);
  const [running, setRunning] = useState(false);
  const [paused, setPaused] = useState(false);
  const [error, setError] = useState(null);
  const [dropped, setDropped] = useState(0);
  const [, setTick] = useState(0);
  const events = useRef([]);
  const ctl = useRef(null);
  const pausedRef = useRef(false);
  pausedRef.current = paused;

  useEffect(() => () => ctl.current && ctl.current.abort(), []);

  const start = (e) => {
    e.preventDefault();
    if (ctl.current) ctl.current.abort();
    const c = new AbortController();
    ctl.current = c;
    setRunning(true);
    setError(null);
    setDropped(0);
    const q = { [kind]: value.trim(), payload_bytes: payload ? 256 : '' };
    let pending = false;
    stream('trace' + query(q), (name, ev) => {
      if (name === 'status') { setDropped(ev.dropped); return; }
      if (name === 'end') return;
      if (name !== 'trace' || pausedRef.current) return;
      const a = events.current;
      a.push(ev);
      if (a.length > maxKept) a.splice(0, a.length - maxKept);
      if (!pending) { // one render a frame, however many events come
        pending = true;
        requestAnimationFrame(() => { pending = false; setTick((t) => t + 1); });
      }
    }, c.signal).catch((err) => { if (!isAbort(err)) setError(err); }).finally(() => {
      if (ctl.current === c) { ctl.current = null; setRunning(false); }
    });
  };
  const stop = () => { if (ctl.current) ctl.current.abort(); };
  const clear = () => { events.current = []; setTick((t) => t + 1); };
  const download = () => {
    const blob = new Blob(events.current.map((ev) => JSON.stringify(ev) + '\n'), { type: 'application/x-ndjson' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'tern-trace.jsonl';
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 0);
  };
  const shown = events.current.slice(-maxRows).reverse();
  // Start and Stop have keys: one button reused as the other would submit
  // the form it just stopped (the render comes before the click's default).
  return html`<div><h1>Live trace</h1>
    <form class="toolbar" onSubmit=${start}>
      <select aria-label="Follow" value=${kind} onChange=${(e) => setKind(e.target.value)} disabled=${running}>
        <option value="topic">Topic filter</option><option value="client_id">Client id</option><option value="address">Address (IP or CIDR)</option>
      </select>
      <input aria-label="What to follow" data-testid="trace-value" required value=${value} disabled=${running}
        placeholder=${kind === 'topic' ? 'sensors/#' : kind === 'address' ? '10.0.0.0/8' : 'client id'} onInput=${(e) => setValue(e.target.value)}/>
      <label><input type="checkbox" checked=${payload} disabled=${running} onChange=${(e) => setPayload(e.target.checked)}/> payloads</label>
      ${running ? html`<button type="button" key="stop" class="btn" data-testid="trace-stop" onClick=${stop}>Stop</button>`
        : html`<button type="submit" key="start" class="btn primary" data-testid="trace-start">Start</button>`}
      <button type="button" class="btn" onClick=${() => setPaused(!paused)} disabled=${!running}>${paused ? 'Resume' : 'Pause'}</button>
      <button type="button" class="btn" onClick=${clear}>Clear</button>
      <button type="button" class="btn" onClick=${download} disabled=${!events.current.length}>Download JSON lines</button>
      <span class="grow"></span>
      <span class="muted" data-testid="trace-count" data-events=${events.current.length} data-dropped=${dropped}>${fmtNum(events.current.length)} events${dropped ? ', ' + fmtNum(dropped) + ' dropped by the limits' : ''}</span>
    </form>
    <${Notice} error=${error}/>
    ${running && html`<p class="muted">Tracing${paused ? ' (paused: new events are not kept)' : ''}; the newest first, the last ${fmtNum(maxRows)} shown.</p>`}
    <div class="table-wrap"><table class="trace-rows" data-testid="trace-table"><thead><tr><th>Time</th><th>Event</th><th>Client</th><th>Topic</th><th>QoS</th><th>Size</th><th>Payload / reason</th></tr></thead>
      <tbody>${shown.map((ev) => html`<tr data-type=${ev.type}>
        <td class="mono">${ev.time.slice(11, 23)}</td><td>${ev.type}</td><td class="mono">${ev.client_id || ''}${ev.from ? ' ← ' + ev.from : ''}</td>
        <td class="mono">${ev.topic || ''}</td><td>${ev.qos}</td><td class="num">${ev.size || ''}</td>
        <td class="mono">${ev.reason || (ev.payload_encoding === 'base64' ? '(binary) ' + ev.payload : ev.payload || '')}${ev.truncated ? '…' : ''}</td></tr>`)}
      </tbody></table>
      ${!shown.length && html`<div class="empty">${running ? 'Waiting for events…' : 'No events.'}</div>`}</div>
  </div>`;
}
