// Retained messages: listed by filter (GET /api/v1/retained?filter=),
// one viewed as text, JSON or hex (GET /api/v1/retained/{topic}),
// deleted one at a time (DELETE /api/v1/retained/{topic}) or all those a
// filter matches (DELETE /api/v1/retained?filter=), after a confirmation.
import { html, useState, useEffect, useRef, Notice, Modal, Tabs, Pager, confirmAction, fmtNum, fmtBytes, fmtTime } from '../lib.js';
import { api, query, enc } from '../api.js';

// bytesOf returns a payload's bytes from the API's encoding.
function bytesOf(m) {
  if (m.payload_encoding === 'base64') {
    const bin = atob(m.payload || '');
    return Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
  }
  return new TextEncoder().encode(m.payload || '');
}

// hexDump writes 16 bytes a line: offset, hex, and printable ASCII.
export function hexDump(b) {
  const lines = [];
  for (let i = 0; i < b.length; i += 16) {
    const row = b.subarray(i, i + 16);
    const hex = Array.from(row, (x) => x.toString(16).padStart(2, '0')).join(' ');
    const asc = Array.from(row, (x) => (x >= 32 && x < 127 ? String.fromCharCode(x) : '.')).join('');
    lines.push(i.toString(16).padStart(8, '0') + '  ' + hex.padEnd(48) + ' ' + asc);
  }
  return lines.join('\n');
}

function View({ topic, onClose, onDelete }) {
  const [m, setM] = useState(null);
  const [error, setError] = useState(null);
  const [as, setAs] = useState('text');
  useEffect(() => { api('retained/' + enc(topic)).then(setM).catch(setError); }, [topic]);
  let body = '';
  if (m) {
    const b = bytesOf(m);
    if (as === 'hex') body = hexDump(b);
    else if (as === 'json') {
      try { body = JSON.stringify(JSON.parse(new TextDecoder().decode(b)), null, 2); } catch (e) { body = 'Not JSON: ' + e.message; }
    } else body = m.payload_encoding === 'base64' ? '(binary: see hex)' : m.payload;
  }
  return html`<${Modal} title=${topic} onClose=${onClose} wide>
    <${Notice} error=${error}/>
    ${m && html`<div data-testid="retained-view">
      <dl class="kv"><dt>Size</dt><dd>${fmtBytes(m.payload_size)}</dd><dt>QoS</dt><dd>${m.qos}</dd><dt>From</dt><dd>${m.origin}</dd>
        <dt>Received</dt><dd>${fmtTime(m.received_at)}</dd>${m.expires_at && html`<dt>Expires</dt><dd>${fmtTime(m.expires_at)}</dd>`}
        ${m.content_type && html`<dt>Content type</dt><dd>${m.content_type}</dd>`}
        ${(m.user_properties || []).map((u) => html`<dt>${u.key}</dt><dd>${u.value}</dd>`)}</dl>
      <${Tabs} tabs=${[['text', 'Text'], ['json', 'JSON'], ['hex', 'Hex']]} value=${as} onChange=${setAs}/>
      <pre data-testid="payload">${body}</pre>
      <div class="modal-actions"><button type="button" class="btn danger" onClick=${() => onDelete(topic)}>Delete</button></div>
    </div>`}
  <//>`;
}

export function Retained() {
  const [filter, setFilter] = useState('#');
  const [page, setPage] = useState(1);
  const [res, setRes] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [view, setView] = useState(null);
  const [reload, setReload] = useState(0);
  const seq = useRef(0); // the latest request: an older answer is let go
  useEffect(() => {
    const n = ++seq.current;
    api('retained' + query({ filter, page, limit: 100 }))
      .then((r) => { if (n === seq.current) { setRes(r); setError(null); } })
      .catch((e) => { if (n === seq.current) setError(e); });
  }, [filter, page, reload]);
  const refresh = () => setReload((x) => x + 1);

  const delOne = async (topic) => {
    if (!await confirmAction('Delete the retained message of ' + topic + '?', 'New subscribers will no longer get it.', 'Delete')) return;
    try {
      await api('retained/' + enc(topic), { method: 'DELETE' });
      setNotice({ message: 'Deleted ' + topic });
      setView(null);
      refresh();
    } catch (e) { setError(e); }
  };
  const delAll = async () => {
    const n = res ? res.meta.count : 0;
    if (!await confirmAction('Delete every retained message matching ' + filter + '?', 'That is ' + fmtNum(n) + ' messages now. This cannot be undone.', 'Delete all')) return;
    try {
      const r = await api('retained' + query({ filter }), { method: 'DELETE' });
      setNotice({ message: 'Deleted ' + fmtNum(r.deleted) + ' retained messages' });
      refresh();
    } catch (e) { setError(e); }
  };
  const rows = res ? res.data : [];
  return html`<div><h1>Retained messages</h1>
    <div class="toolbar">
      <input type="search" aria-label="Filter" placeholder="topic filter" value=${filter} data-testid="retained-filter"
        onChange=${(e) => { setFilter(e.target.value || '#'); setPage(1); }}/>
      <button type="button" class="btn" onClick=${refresh}>Refresh</button>
      <span class="grow"></span>
      <button type="button" class="btn danger" disabled=${!rows.length} onClick=${delAll}>Delete all matching</button>
    </div>
    <${Notice} error=${error}/><${Notice} error=${notice} kind="ok"/>
    <div class="table-wrap"><table data-testid="retained-table"><thead><tr><th>Topic</th><th class="num">Size</th><th>QoS</th><th>From</th><th>Received</th><th></th></tr></thead>
      <tbody>${rows.map((m) => html`<tr key=${m.topic} data-topic=${m.topic}>
        <td class="mono"><button type="button" class="link" onClick=${() => setView(m.topic)}>${m.topic}</button></td>
        <td class="num">${fmtBytes(m.payload_size)}</td><td>${m.qos}</td><td class="mono">${m.origin}</td><td>${fmtTime(m.received_at)}</td>
        <td><button type="button" class="btn small" data-testid=${'delete-' + m.topic} onClick=${() => delOne(m.topic)}>Delete</button></td></tr>`)}
      </tbody></table>
      ${res && !rows.length && html`<div class="empty">No retained message matches.</div>`}</div>
    <${Pager} meta=${res && res.meta} page=${page} onPrev=${() => setPage(page - 1)} onNext=${() => setPage(page + 1)}/>
    ${view && html`<${View} topic=${view} onClose=${() => setView(null)} onDelete=${delOne}/>`}
  </div>`;
}
