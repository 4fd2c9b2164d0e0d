// Clients: sessions online and offline, a page at a time from the server
// (GET /api/v1/sessions: prefix search, filters, sorts, cursors), with
// their detail, and kick or delete one or many.
import { html, useState, useEffect, useRef, Notice, Pager, Modal, confirmAction, hashQuery, fmtNum, fmtBytes, fmtAgo, fmtTime, protocolName } from '../lib.js';
import { api, query, enc } from '../api.js';

const sorts = [['client_id', 'Client id'], ['connected_at', 'Connected'], ['queued', 'Queued'], ['inflight', 'In flight'], ['dropped', 'Dropped']];
const limit = 50;

export function Clients() {
  const [f, setF] = useState({ search: hashQuery().get('search') || '', search_by: 'client_id', state: '', listener: '', protocol: '', queued: false, dropped: false, sort: 'client_id' });
  const [cursors, setCursors] = useState(['']); // the cursor of each page seen, for Previous
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [selected, setSelected] = useState(new Set());
  const [detail, setDetail] = useState(null);
  const [listeners, setListeners] = useState([]);
  const [reload, setReload] = useState(0);
  const seq = useRef(0);
  const [typed, setTyped] = useState(f.search); // the search box, applied once typing pauses

  useEffect(() => { api('listeners').then((r) => setListeners(r.data || [])).catch(() => {}); }, []);

  const after = cursors[cursors.length - 1];
  useEffect(() => {
    const n = ++seq.current;
    const q = {
      limit, after, search: f.search, search_by: f.search !== '' && f.search_by !== 'client_id' ? f.search_by : '',
      state: f.state, listener: f.listener, protocol: f.protocol, min_queued: f.queued ? 1 : '', min_dropped: f.dropped ? 1 : '',
      sort: f.sort === 'client_id' ? '' : f.sort,
    };
    api('sessions' + query(q)).then((r) => {
      if (n !== seq.current) return; // a newer request is on its way
      setData(r);
      setError(null);
    }).catch((e) => { if (n === seq.current) setError(e); });
  }, [f, after, reload]);

  const set = (k, v) => { setF((cur) => Object.assign({}, cur, { [k]: v })); setCursors(['']); setSelected(new Set()); };
  useEffect(() => {
    if (typed === f.search) return undefined;
    const id = setTimeout(() => set('search', typed), 150);
    return () => clearTimeout(id);
  }, [typed]);
  const refresh = () => setReload((x) => x + 1);
  const rows = data ? data.data : [];
  const toggle = (id) => {
    const s = new Set(selected);
    if (s.has(id)) s.delete(id); else s.add(id);
    setSelected(s);
  };
  const allOnPage = rows.length > 0 && rows.every((r) => selected.has(r.client_id));
  const toggleAll = () => setSelected(allOnPage ? new Set() : new Set(rows.map((r) => r.client_id)));

  const act = async (what, ids) => {
    const kick = what === 'kick';
    const ok = await confirmAction(
      (kick ? 'Disconnect ' : 'Delete the session of ') + (ids.length === 1 ? ids[0] : ids.length + ' clients') + '?',
      kick ? 'Connected clients are disconnected (MQTT 5: reason 0x98, administrative action); they may reconnect.'
        : 'Their subscriptions and queued messages are gone; connected ones are disconnected.',
      kick ? 'Disconnect' : 'Delete');
    if (!ok) return;
    try {
      const r = await api(kick ? 'clients/disconnect' : 'sessions/delete', { method: 'POST', body: { client_ids: ids } });
      setNotice({ message: (kick ? 'Disconnected: ' : 'Deleted: ') + (r.done.length ? r.done.join(', ') : 'none') +
        (r.not_found.length ? ' (not found: ' + r.not_found.join(', ') + ')' : '') });
      setSelected(new Set());
      setDetail(null);
      refresh();
    } catch (e) { setError(e); }
  };

  const sortBy = (s) => set('sort', s);
  const th = (label, s, cls) => html`<th class=${(cls || '') + (s ? ' sortable' : '')} onClick=${s && (() => sortBy(s))}
    aria-sort=${f.sort === s ? (s === 'client_id' ? 'ascending' : 'descending') : undefined}>${label}${f.sort === s ? (s === 'client_id' ? ' ▲' : ' ▼') : ''}</th>`;

  return html`<div>
    <h1>Clients</h1>
    <div class="toolbar">
      <select aria-label="Search by" value=${f.search_by} onChange=${(e) => set('search_by', e.target.value)}>
        <option value="client_id">Client id</option><option value="username">User</option><option value="address">Address</option>
      </select>
      <input type="search" placeholder="starts with…" aria-label="Search" data-testid="client-search" value=${typed}
        onInput=${(e) => setTyped(e.target.value)}/>
      <select aria-label="State" value=${f.state} onChange=${(e) => set('state', e.target.value)} data-testid="filter-state">
        <option value="">online and offline</option><option value="online">online</option><option value="offline">offline</option>
      </select>
      <select aria-label="Listener" value=${f.listener} onChange=${(e) => set('listener', e.target.value)}>
        <option value="">any listener</option>
        ${listeners.map((l) => html`<option value=${l.id}>${l.id}</option>`)}
      </select>
      <select aria-label="Protocol" value=${f.protocol} onChange=${(e) => set('protocol', e.target.value)}>
        <option value="">any protocol</option><option value="5">MQTT 5</option><option value="4">MQTT 3.1.1</option><option value="3">MQTT 3.1</option>
      </select>
      <label><input type="checkbox" checked=${f.queued} onChange=${(e) => set('queued', e.target.checked)}/> queued > 0</label>
      <label><input type="checkbox" checked=${f.dropped} onChange=${(e) => set('dropped', e.target.checked)}/> dropped > 0</label>
      <select aria-label="Sort" value=${f.sort} onChange=${(e) => sortBy(e.target.value)}>
        ${sorts.map(([v, label]) => html`<option value=${v}>sort: ${label}</option>`)}
      </select>
      <span class="grow"></span>
      <button type="button" class="btn" data-testid="refresh" onClick=${refresh}>Refresh</button>
      <button type="button" class="btn" disabled=${!selected.size} data-testid="bulk-kick" onClick=${() => act('kick', [...selected])}>Disconnect ${selected.size || ''}</button>
      <button type="button" class="btn danger" disabled=${!selected.size} onClick=${() => act('delete', [...selected])}>Delete sessions ${selected.size || ''}</button>
    </div>
    <${Notice} error=${error}/>
    <${Notice} error=${notice} kind="ok"/>
    <div class="table-wrap"><table data-testid="clients-table">
      <thead><tr>
        <th><input type="checkbox" aria-label="Select all" checked=${allOnPage} onChange=${toggleAll}/></th>
        ${th('Client id', 'client_id')}<th>State</th><th>User</th><th>Address</th><th>Listener</th><th>Protocol</th>
        ${th('Connected', 'connected_at')}${th('Queued', 'queued', 'num')}${th('In flight', 'inflight', 'num')}<th class="num">Subs</th>
        <th class="num">In / out</th><th></th>
      </tr></thead>
      <tbody>
        ${rows.map((r) => html`<tr key=${r.client_id} data-client=${r.client_id}>
          <td><input type="checkbox" aria-label=${'Select ' + r.client_id} checked=${selected.has(r.client_id)} onChange=${() => toggle(r.client_id)}/></td>
          <td class="mono"><button type="button" class="link" onClick=${() => setDetail(r.client_id)}>${r.client_id}</button></td>
          <td>${r.online ? html`<span class="badge on">online</span>` : html`<span class="badge off" title=${r.disconnect_reason || ''}>offline</span>`}</td>
          <td>${r.username || ''}</td><td class="mono">${r.remote_addr || ''}</td><td>${r.listener || ''}</td>
          <td>${protocolName[r.protocol_version] || ''}</td>
          <td title=${fmtTime(r.connected_at)}>${r.online ? fmtAgo(r.connected_at) : r.disconnected_at ? 'left ' + fmtAgo(r.disconnected_at) : ''}</td>
          <td class="num">${r.queued ? html`<span class="badge warn">${fmtNum(r.queued)}</span>` : '0'}</td>
          <td class="num">${fmtNum(r.inflight)}</td><td class="num">${fmtNum(r.subscriptions)}</td>
          <td class="num">${fmtNum(r.messages_received)} / ${fmtNum(r.messages_sent)}</td>
          <td>${r.online && html`<button type="button" class="btn small" data-testid=${'kick-' + r.client_id} onClick=${() => act('kick', [r.client_id])}>Kick</button>`}</td>
        </tr>`)}
      </tbody>
    </table>
    ${data && !rows.length && html`<div class="empty">No session matches.</div>`}</div>
    <${Pager} meta=${data && data.meta} page=${cursors.length}
      onPrev=${() => setCursors(cursors.slice(0, -1))} onNext=${() => setCursors([...cursors, data.meta.next])}/>
    ${detail && html`<${ClientDetail} id=${detail} onClose=${() => setDetail(null)} onAct=${act}/>`}
  </div>`;
}

// ClientDetail shows one session: GET /api/v1/sessions/{id}, and while it
// is connected GET /api/v1/clients/{id} (connection and subscriptions),
// else GET /api/v1/subscriptions?client_id=.
function ClientDetail({ id, onClose, onAct }) {
  const [s, setS] = useState(null);
  const [c, setC] = useState(null);
  const [subs, setSubs] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    (async () => {
      try {
        const sess = await api('sessions/' + enc(id));
        setS(sess);
        if (sess.online) {
          const cl = await api('clients/' + enc(id)).catch(() => null);
          setC(cl);
          setSubs(cl ? cl.subscriptions || [] : []);
        } else {
          setSubs((await api('subscriptions' + query({ client_id: id, limit: 1000 }))).data);
        }
      } catch (e) { setError(e); }
    })();
  }, [id]);
  const kv = (pairs) => html`<dl class="kv">${pairs.filter((p) => p[1] !== undefined && p[1] !== '').map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}</dl>`;
  return html`<${Modal} title=${'Client ' + id} onClose=${onClose} wide>
    <${Notice} error=${error}/>
    ${s && html`<div data-testid="client-detail">
      <h3>Connection</h3>
      ${kv([['State', s.online ? 'online' : 'offline'], ['User', s.username], ['Address', s.remote_addr], ['Listener', s.listener],
        ['Protocol', protocolName[s.protocol_version]], ['Connected', fmtTime(s.connected_at)],
        ['Disconnected', s.disconnected_at && fmtTime(s.disconnected_at)], ['Last disconnect reason', s.disconnect_reason],
        ['Keep alive', c && c.keep_alive + ' s'], ['Clean start', c && String(c.clean_start)]])}
      <h3>Session</h3>
      ${kv([['Expiry', s.session_expiry_interval === 4294967295 ? 'never' : s.session_expiry_interval + ' s'], ['Queued', fmtNum(s.queued) + ' (' + fmtBytes(s.queued_bytes) + ')'], ['In flight', fmtNum(s.inflight)],
        ['Pending bytes', c && fmtBytes(c.pending_bytes)],
        ['Dropped', s.dropped ? Object.entries(s.dropped).map(([k, v]) => k + ' ' + fmtNum(v)).join(', ') : '0']])}
      <h3>Counters (this connection)</h3>
      ${kv([['Messages in / out', fmtNum(s.messages_received) + ' / ' + fmtNum(s.messages_sent)],
        ['Bytes in / out', fmtBytes(s.bytes_received) + ' / ' + fmtBytes(s.bytes_sent)]])}
      <h3>Subscriptions</h3>
      ${subs && (subs.length ? html`<div class="table-wrap"><table><thead><tr><th>Filter</th><th>QoS</th><th>Options</th></tr></thead><tbody>
        ${subs.map((x) => html`<tr><td class="mono">${x.topic}</td><td>${x.qos}</td>
          <td>${[x.no_local && 'no local', x.retain_as_published && 'retain as published', x.subscription_identifier && 'id ' + x.subscription_identifier].filter(Boolean).join(', ')}</td></tr>`)}
      </tbody></table></div>` : html`<p class="muted">None.</p>`)}
      <div class="modal-actions">
        ${s.online && html`<button type="button" class="btn" data-testid="detail-kick" onClick=${() => onAct('kick', [id])}>Disconnect</button>`}
        <button type="button" class="btn danger" onClick=${() => onAct('delete', [id])}>Delete session</button>
      </div>
    </div>`}
  <//>`;
}
