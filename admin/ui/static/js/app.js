// The dashboard's shell: the login page, the navigation and the router
// (#/page in the address, so that the server serves one page only). A
// page's module is loaded when it is first shown, so that the first load
// fetches the shell and one page.
import { html, render, useState, useEffect, Confirm, Notice } from './lib.js';
import { api, onAuthNeeded, login, logout, credentials, basic, ApiError } from './api.js';

// id, label, module (pages/<id>.js) and the component it exports.
const pages = [
  ['overview', 'Overview', 'Overview'],
  ['clients', 'Clients', 'Clients'],
  ['subscriptions', 'Subscriptions', 'Subscriptions'],
  ['retained', 'Retained', 'Retained'],
  ['topics', 'Topics', 'Topics'],
  ['trace', 'Live trace', 'Trace'],
  ['publish', 'Publish', 'Publish'],
  ['listeners', 'Listeners & config', 'Listeners'],
  ['cluster', 'Cluster', 'Cluster'],
];

// Page loads the module of page id and shows its component.
const loaded = {};
function Page({ id, name }) {
  const [C, setC] = useState(() => loaded[id]);
  const [error, setError] = useState(null);
  useEffect(() => {
    if (C) return;
    import('./pages/' + id + '.js').then((m) => { loaded[id] = m[name]; setC(() => m[name]); }).catch(setError);
  }, [id]);
  if (error) return html`<${Notice} error=${error}/>`;
  return C ? html`<${C}/>` : null;
}

// route returns the page the address names.
function route() {
  const name = location.hash.replace(/^#\/?/, '').split('?')[0];
  return pages.find((p) => p[0] === name) || pages[0];
}

function Login({ onDone }) {
  const [kind, setKind] = useState('token');
  const [key, setKey] = useState('');
  const [secret, setSecret] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    login(kind === 'token' ? 'Bearer ' + secret.trim() : basic(key, secret));
    try {
      await api('stats');
      onDone();
    } catch (err) {
      logout();
      setError(err instanceof ApiError && err.status === 401 ? new Error('Not accepted: check the key or token.') : err);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login">
    <form class="login-box" onSubmit=${submit} data-testid="login">
      <h1><span class="logo">◆</span> Tern</h1>
      <p>This admin API needs credentials: an API key (admin.api_keys) or the admin token.</p>
      <div class="radio-row">
        <label><input type="radio" name="kind" checked=${kind === 'token'} onChange=${() => setKind('token')}/> Token</label>
        <label><input type="radio" name="kind" data-testid="login-kind-key" checked=${kind === 'key'} onChange=${() => setKind('key')}/> API key</label>
      </div>
      ${kind === 'key' && html`<label>Key <input autocomplete="username" data-testid="login-key" value=${key} onInput=${(e) => setKey(e.target.value)} required/></label>`}
      <label>${kind === 'key' ? 'Secret' : 'Token'}
        <input type="password" autocomplete="current-password" data-testid="login-secret" value=${secret}
          onInput=${(e) => setSecret(e.target.value)} required/></label>
      <${Notice} error=${error}/>
      <button class="btn primary" type="submit" disabled=${busy}>Log in</button>
      <p class="hint">Kept for this browser tab only (sessionStorage), sent as Authorization.</p>
    </form>
  </main>`;
}

function App() {
  const [page, setPage] = useState(route());
  const [needAuth, setNeedAuth] = useState(false);
  const [info, setInfo] = useState(null);
  const [starting, setStarting] = useState(null);
  // The credentials are checked (one call) before a page makes its own
  // calls, so that a page that needs a login shows it at once.
  const [checked, setChecked] = useState(false);

  useEffect(() => {
    const onHash = () => setPage(route());
    addEventListener('hashchange', onHash);
    const off = onAuthNeeded(() => setNeedAuth(true));
    return () => { removeEventListener('hashchange', onHash); off(); };
  }, []);

  useEffect(() => {
    if (needAuth) return;
    api('stats').then((st) => { setInfo(st); setStarting(null); setChecked(true); }).catch((e) => {
      if (e.status === 503) setStarting(e);
      if (e.status !== 401) setChecked(true);
    });
  }, [needAuth]);

  if (needAuth) return html`<${Login} onDone=${() => setNeedAuth(false)}/>`;
  const [id, , name] = page;
  return html`<div class="shell">
    <nav class="side">
      <div class="brand"><span class="logo">◆</span> Tern</div>
      ${pages.map(([pid, label]) => html`<a href=${'#/' + pid} class=${pid === id ? 'active' : ''} data-testid=${'nav-' + pid}>${label}</a>`)}
      <div class="side-foot">
        ${info && html`<div>version ${info.version}</div>`}
        ${credentials() && html`<button type="button" class="btn small" data-testid="logout" onClick=${() => { logout(); setNeedAuth(true); }}>Log out</button>`}
      </div>
    </nav>
    <main class="content" data-page=${id}>
      <${Notice} error=${starting} kind="warn"/>
      ${checked && html`<${Page} key=${id} id=${id} name=${name}/>`}
    </main>
    <${Confirm}/>
  </div>`;
}

render(html`<${App}/>`, document.getElementById('app'));
