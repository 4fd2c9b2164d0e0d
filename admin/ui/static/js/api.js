// The admin API as the dashboard calls it: every call carries the
// credentials the login page took (an API key or a token, kept in
// sessionStorage, never in a cookie) as Authorization; a 401 sends the
// dashboard back to the login page.

const storeKey = 'tern.authorization';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const listeners = new Set();

// onAuthNeeded registers fn, called when a call answers 401.
export function onAuthNeeded(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function authNeeded() {
  for (const fn of listeners) fn();
}

export function credentials() {
  return sessionStorage.getItem(storeKey);
}

// login keeps the Authorization header value for the session.
export function login(value) {
  sessionStorage.setItem(storeKey, value);
}

export function logout() {
  sessionStorage.removeItem(storeKey);
}

// basic returns the Authorization value of an API key and its secret.
export function basic(key, secret) {
  const bytes = new TextEncoder().encode(key + ':' + secret);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return 'Basic ' + btoa(bin);
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const auth = credentials();
  if (auth) h.Authorization = auth;
  return h;
}

async function errorOf(res) {
  let msg = res.status + ' ' + res.statusText;
  try {
    const body = await res.json();
    if (body && body.error) msg = body.error;
  } catch (e) { /* not JSON */ }
  if (res.status === 401) authNeeded();
  return new ApiError(res.status, msg);
}

// api calls the admin API: path is relative to /api/v1/. It returns the
// decoded JSON (null for 204) and throws an ApiError for a 4xx or 5xx.
export async function api(path, { method = 'GET', body, text = false, signal } = {}) {
  const init = { method, headers: headers(body !== undefined ? { 'Content-Type': 'application/json' } : {}), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch('api/v1/' + path, init);
  if (!res.ok) throw await errorOf(res);
  if (res.status === 204) return null;
  return text ? res.text() : res.json();
}

// query builds a query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '' && v !== false) q.set(k, v === true ? '1' : String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

// stream reads a Server-Sent Events answer of the API, calling
// onEvent(name, data) for each event, until the answer ends or signal
// aborts. EventSource cannot send an Authorization header, so this reads
// the stream with fetch.
export async function stream(path, onEvent, signal) {
  const res = await fetch('api/v1/' + path, { headers: headers({ Accept: 'text/event-stream' }), signal });
  if (!res.ok) throw await errorOf(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  // Stop reading at once when the page lets the stream go.
  if (signal) signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let name = 'message', data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) name = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// keepStreaming is stream, opened again when the answer ends or fails
// (the broker restarted, a proxy cut it), after 1 s, then up to 30 s
// between tries; onState(error or null) tells how it goes. It ends when
// signal aborts, or at a 401.
export async function keepStreaming(path, onEvent, signal, onState) {
  let wait = 1000;
  while (!signal.aborted) {
    try {
      await stream(path, (name, data) => { wait = 1000; onState(null); onEvent(name, data); }, signal);
      if (signal.aborted) return;
      onState(new Error('The live stream ended; opening it again…'));
    } catch (e) {
      if (isAbort(e) || (e instanceof ApiError && e.status === 401)) return;
      onState(e);
    }
    await new Promise((resolve) => {
      const id = setTimeout(resolve, wait);
      signal.addEventListener('abort', () => { clearTimeout(id); resolve(); }, { once: true });
    });
    wait = Math.min(wait * 2, 30000);
  }
}

// isAbort reports whether an error is an aborted fetch (a page left).
export function isAbort(e) {
  return e && e.name === 'AbortError';
}

// enc percent-encodes a client id or topic for a path.
export const enc = encodeURIComponent;
