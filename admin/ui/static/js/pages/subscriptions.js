// Subscriptions: by filter (GET /api/v1/subscriptions/filters, and the
// subscribers of one with GET /api/v1/subscriptions?filter=), by client
// (GET /api/v1/subscriptions?client_id=) and shared groups with their
// members (GET /api/v1/subscriptions/shared).
import { html, useState, useEffect, useRef, Notice, Tabs, Modal, Pager, fmtNum } from '../lib.js';
import { api, query } from '../api.js';

// usePaged loads a paged listing; page numbers from 1.
function usePaged(path, params, deps) {
  const [page, setPage] = useState(1);
  const [res, setRes] = useState(null);
  const [error, setError] = useState(null);
  const seq = useRef(0); // the latest request: an older answer is let go
  useEffect(() => { setPage(1); }, deps);
  useEffect(() => {
    const n = ++seq.current;
    if (path === null) { setRes(null); return; }
    api(path + query(Object.assign({ page, limit: 100 }, params)))
      .then((r) => { if (n === seq.current) { setRes(r); setError(null); } })
      .catch((e) => { if (n === seq.current) setError(e); });
  }, [page, path, ...deps]);
  return { res, error, page, setPage };
}

function Pages({ p }) {
  return html`<${Pager} meta=${p.res && p.res.meta} page=${p.page} onPrev=${() => p.setPage(p.page - 1)} onNext=${() => p.setPage(p.page + 1)}/>`;
}

function ByFilter() {
  const [under, setUnder] = useState('');
  const [open, setOpen] = useState(null);
  const p = usePaged('subscriptions/filters', under ? { under } : {}, [under]);
  return html`<div>
    <div class="toolbar"><input type="search" placeholder="below topic levels, e.g. sensors/+" aria-label="Below" value=${under}
      onInput=${(e) => setUnder(e.target.value.replace(/\/$/, ''))}/></div>
    <${Notice} error=${p.error}/>
    <div class="table-wrap"><table data-testid="filters-table"><thead><tr><th>Filter</th><th class="num">Subscribers</th><th>Shared groups</th></tr></thead>
      <tbody>${p.res && p.res.data.map((f) => html`<tr>
        <td class="mono"><button type="button" class="link" onClick=${() => setOpen(f.filter)}>${f.filter}</button></td>
        <td class="num">${fmtNum(f.subscribers)}</td>
        <td>${(f.shared_groups || []).map((g) => html`<span class="badge">${g.group}: ${g.members.length}</span> `)}</td></tr>`)}
      </tbody></table>
      ${p.res && !p.res.data.length && html`<div class="empty">No subscriptions.</div>`}</div>
    <${Pages} p=${p}/>
    ${open !== null && html`<${Subscribers} filter=${open} onClose=${() => setOpen(null)}/>`}
  </div>`;
}

function Subscribers({ filter, onClose }) {
  const p = usePaged('subscriptions', { filter }, [filter]);
  return html`<${Modal} title=${'Subscribers of ' + filter} onClose=${onClose} wide>
    <${Notice} error=${p.error}/>
    <${SubTable} rows=${p.res ? p.res.data : []}/>
    <${Pages} p=${p}/>
  <//>`;
}

function SubTable({ rows }) {
  return html`<div class="table-wrap"><table><thead><tr><th>Client id</th><th>Filter</th><th>QoS</th><th>Options</th></tr></thead>
    <tbody>${rows.map((s) => html`<tr><td class="mono"><a href=${'#/clients?search=' + encodeURIComponent(s.client_id)}>${s.client_id}</a></td>
      <td class="mono">${s.topic}</td><td>${s.qos}</td>
      <td>${[s.no_local && 'no local', s.retain_as_published && 'retain as published', s.retain_handling ? 'retain handling ' + s.retain_handling : '',
        s.subscription_identifier && 'id ' + s.subscription_identifier].filter(Boolean).join(', ')}</td></tr>`)}</tbody></table>
    ${!rows.length && html`<div class="empty">None.</div>`}</div>`;
}

function ByClient() {
  const [id, setId] = useState('');
  const p = usePaged(id ? 'subscriptions' : null, { client_id: id }, [id]);
  return html`<div>
    <div class="toolbar"><input type="search" placeholder="client id (exact)" aria-label="Client id" value=${id} onInput=${(e) => setId(e.target.value)}/></div>
    <${Notice} error=${p.error}/>
    ${id ? html`<${SubTable} rows=${p.res ? p.res.data : []}/><${Pages} p=${p}/>` : html`<p class="muted">Give a client id.</p>`}
  </div>`;
}

function Shared() {
  const p = usePaged('subscriptions/shared', {}, []);
  return html`<div><${Notice} error=${p.error}/>
    <div class="table-wrap"><table data-testid="shared-table"><thead><tr><th>Group</th><th>Filter</th><th>Members</th></tr></thead>
      <tbody>${p.res && p.res.data.map((g) => html`<tr><td>${g.group}</td><td class="mono">${g.filter}</td>
        <td class="mono">${g.members.join(', ')}</td></tr>`)}</tbody></table>
      ${p.res && !p.res.data.length && html`<div class="empty">No shared subscriptions.</div>`}</div>
    <${Pages} p=${p}/></div>`;
}

export function Subscriptions() {
  const [tab, setTab] = useState('filters');
  return html`<div><h1>Subscriptions</h1>
    <${Tabs} tabs=${[['filters', 'By filter'], ['client', 'By client'], ['shared', 'Shared groups']]} value=${tab} onChange=${setTab}/>
    ${tab === 'filters' && html`<${ByFilter}/>`}${tab === 'client' && html`<${ByClient}/>`}${tab === 'shared' && html`<${Shared}/>`}
  </div>`;
}
