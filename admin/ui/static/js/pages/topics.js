// Topics: the tree of subscription filters and retained topics, a level
// at a time (GET /api/v1/topics?parent=a/b), opened as the user goes.
// It holds what the broker stores, not every topic ever published.
import { html, useState, useEffect, Notice, fmtNum } from '../lib.js';
import { api } from '../api.js';

const perLevel = 1000;

// levelsOf loads the levels below path (null: the root).
function levelsOf(path) {
  const q = path === null ? '' : 'parent=' + encodeURIComponent(path) + '&';
  return api('topics?' + q + 'limit=' + perLevel);
}

function Level({ path }) {
  const [res, setRes] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { levelsOf(path).then(setRes).catch(setError); }, [path]);
  if (error) return html`<${Notice} error=${error}/>`;
  if (!res) return html`<ul><li class="muted">…</li></ul>`;
  return html`<ul>
    ${res.data.map((l) => html`<${Node} key=${l.path} level=${l}/>`)}
    ${res.meta.hasnext && html`<li class="muted">… ${fmtNum(res.meta.count - res.data.length)} more levels (see GET /api/v1/topics)</li>`}
    ${!res.data.length && html`<li class="muted">Nothing: no subscription and no retained message.</li>`}
  </ul>`;
}

function Node({ level }) {
  const [open, setOpen] = useState(false);
  return html`<li data-path=${level.path}>
    <span class="node">
      <button type="button" class="toggle" aria-label=${(open ? 'Close ' : 'Open ') + level.path} disabled=${!level.below}
        onClick=${() => setOpen(!open)}>${level.below ? (open ? '▾' : '▸') : '·'}</button>
      <span class="mono">${level.name === '' ? '(empty)' : level.name}</span>
      ${level.subscriptions > 0 && html`<span class="badge">${fmtNum(level.subscriptions)} subscribed</span>`}
      ${level.retained && html`<a class="badge on" href=${'#/retained'}>retained</a>`}
    </span>
    ${open && html`<${Level} path=${level.path}/>`}
  </li>`;
}

export function Topics() {
  return html`<div><h1>Topics</h1>
    <p class="muted">Subscription filters and retained topics, level by level.</p>
    <div class="panel tree" data-testid="topic-tree"><${Level} path=${null}/></div>
  </div>`;
}
