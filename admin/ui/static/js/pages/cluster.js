// Cluster: the nodes and their state (GET /api/v1/cluster). Until Tern
// clusters, that is this node alone.
import { html, useState, useEffect, Notice, fmtTime } from '../lib.js';
import { api } from '../api.js';

export function Cluster() {
  const [c, setC] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { api('cluster').then(setC).catch(setError); }, []);
  return html`<div><h1>Cluster</h1>
    <${Notice} error=${error}/>
    ${c && !c.clustered && html`<p class="muted">This broker runs alone: clustering is not configured.</p>`}
    ${c && html`<div class="table-wrap"><table data-testid="nodes-table"><thead><tr><th>Node</th><th>State</th><th>Version</th><th>Started</th></tr></thead>
      <tbody>${c.nodes.map((n) => html`<tr><td class="mono">${n.id}${n.self ? ' (this node)' : ''}</td>
        <td><span class=${'badge ' + (n.state === 'running' ? 'on' : 'warn')}>${n.state}</span></td><td>${n.version}</td><td>${fmtTime(n.started_at)}</td></tr>`)}
      </tbody></table></div>`}
  </div>`;
}
