// Listeners and configuration: the listeners with their addresses,
// connections and certificates (GET /api/v1/listeners), and the
// configuration in force with its secrets hidden (GET /api/v1/config).
import { html, useState, useEffect, Notice, fmtNum, fmtTime } from '../lib.js';
import { api } from '../api.js';

export function Listeners() {
  const [ls, setLs] = useState(null);
  const [cfg, setCfg] = useState(undefined);
  const [error, setError] = useState(null);
  const [cfgError, setCfgError] = useState(null);
  useEffect(() => {
    api('listeners').then((r) => setLs(r.data || [])).catch(setError);
    api('config', { text: true }).then(setCfg).catch(setCfgError);
  }, []);
  return html`<div><h1>Listeners and configuration</h1>
    <${Notice} error=${error}/>
    <div class="table-wrap panel"><table data-testid="listeners-table"><thead><tr><th>Listener</th><th>Address</th><th class="num">Connections</th><th>Certificate expires</th></tr></thead>
      <tbody>${(ls || []).map((l) => html`<tr><td>${l.id}</td><td class="mono">${l.address}</td>
        <td class="num">${fmtNum(l.connections)}${l.max_connections ? ' / ' + fmtNum(l.max_connections) : ''}</td>
        <td>${l.certificate ? html`<span class=${'badge ' + (l.certificate.days_left < 14 ? 'warn' : 'on')}>${fmtTime(l.certificate.not_after)} (${l.certificate.days_left} days)</span>` : '–'}</td></tr>`)}
      </tbody></table></div>
    <h2>Configuration in force</h2>
    <p class="muted">As tern serve --print-config shows it: secrets are replaced by ${'<redacted>'}.</p>
    ${cfgError ? html`<${Notice} error=${cfgError} kind="warn"/>` : html`<pre data-testid="config">${cfg === undefined ? '…' : cfg === null ? 'Not known: an embedded broker (admin.Options.Config).' : cfg}</pre>`}
  </div>`;
}
