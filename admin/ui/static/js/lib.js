// Shared pieces of the dashboard: the html template tag (Preact + htm,
// no build step), formatting, and small components.
import { h, render } from '../vendor/preact.mjs';
import { useState, useEffect, useRef, useCallback, useMemo } from '../vendor/hooks.mjs';
import htm from '../vendor/htm.mjs';

export const html = htm.bind(h);
export { render, useState, useEffect, useRef, useCallback, useMemo };

// fmtNum writes a count with thousands separators; fractions keep one
// decimal below 10.
export function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  if (!Number.isInteger(n)) n = Math.abs(n) < 10 ? Math.round(n * 10) / 10 : Math.round(n);
  return n.toLocaleString('en-US');
}

// fmtShort writes a rate compactly: 950, 12.3k, 4.5M.
export function fmtShort(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  return fmtNum(n);
}

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? Math.round(n) : n.toFixed(1)) + ' ' + units[i];
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return '–';
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), hr = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d > 0) return `${d}d ${hr}h`;
  if (hr > 0) return `${hr}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

// fmtTime writes an RFC 3339 time as local date and time.
export function fmtTime(t) {
  if (!t) return '–';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? t : d.toLocaleString('en-GB', { hour12: false });
}

// fmtAgo writes how long ago an RFC 3339 time was.
export function fmtAgo(t) {
  if (!t) return '–';
  return fmtDuration((Date.now() - new Date(t).getTime()) / 1000) + ' ago';
}

export const protocolName = { 3: '3.1', 4: '3.1.1', 5: '5' };

// hashQuery returns the parameters after "?" in the location's hash
// (#/clients?search=x).
export function hashQuery() {
  const i = location.hash.indexOf('?');
  return new URLSearchParams(i < 0 ? '' : location.hash.slice(i + 1));
}

// Card shows one figure of the overview.
export function Card({ label, value, sub, id }) {
  return html`<div class="card" data-testid=${id}>
    <div class="card-label">${label}</div>
    <div class="card-value" data-testid=${id && id + '-value'}>${value}</div>
    ${sub && html`<div class="card-sub">${sub}</div>`}
  </div>`;
}

// Notice shows an error (or any message) above a page.
export function Notice({ error, kind }) {
  if (!error) return null;
  return html`<div class=${'notice ' + (kind || 'error')} role="alert">${String(error.message || error)}</div>`;
}

// confirmState is the open confirmation, shown by <Confirm/> in the shell.
let setConfirmState = null;

// confirmAction opens a confirmation dialog; it resolves true when the
// user confirms.
export function confirmAction(title, body, action = 'Confirm') {
  return new Promise((resolve) => {
    if (!setConfirmState) { resolve(false); return; }
    setConfirmState({ title, body, action, resolve });
  });
}

export function Confirm() {
  const [st, setSt] = useState(null);
  setConfirmState = setSt;
  const ok = useRef(null);
  useEffect(() => { if (st && ok.current) ok.current.focus(); }, [st]);
  if (!st) return null;
  const close = (v) => { setSt(null); st.resolve(v); };
  const onKey = (e) => { if (e.key === 'Escape') close(false); };
  return html`<div class="modal-back" onKeyDown=${onKey}>
    <div class="modal" role="dialog" aria-modal="true" aria-labelledby="confirm-title">
      <h2 id="confirm-title">${st.title}</h2>
      <div class="modal-body">${st.body}</div>
      <div class="modal-actions">
        <button type="button" class="btn" onClick=${() => close(false)}>Cancel</button>
        <button type="button" class="btn danger" ref=${ok} data-testid="confirm" onClick=${() => close(true)}>${st.action}</button>
      </div>
    </div>
  </div>`;
}

// Modal shows content over the page until closed.
export function Modal({ title, onClose, children, wide }) {
  const onKey = (e) => { if (e.key === 'Escape') onClose(); };
  return html`<div class="modal-back" onKeyDown=${onKey} onClick=${(e) => { if (e.target === e.currentTarget) onClose(); }}>
    <div class=${'modal' + (wide ? ' wide' : '')} role="dialog" aria-modal="true">
      <div class="modal-head"><h2>${title}</h2>
        <button type="button" class="btn small" data-testid="modal-close" onClick=${onClose}>Close</button></div>
      <div class="modal-body">${children}</div>
    </div>
  </div>`;
}

// Pager moves through a cursor-paged listing.
export function Pager({ meta, page, onPrev, onNext }) {
  if (!meta) return null;
  return html`<div class="pager">
    <span>${fmtNum(meta.count)} in all</span>
    <button type="button" class="btn small" disabled=${page <= 1} onClick=${onPrev}>Previous</button>
    <span>page ${page}</span>
    <button type="button" class="btn small" disabled=${!meta.hasnext} data-testid="next-page" onClick=${onNext}>Next</button>
  </div>`;
}

// Tabs switches between the views of a page.
export function Tabs({ tabs, value, onChange }) {
  return html`<div class="tabs" role="tablist">
    ${tabs.map(([id, label]) => html`<button type="button" role="tab" aria-selected=${value === id}
      class=${'tab' + (value === id ? ' active' : '')} data-testid=${'tab-' + id} onClick=${() => onChange(id)}>${label}</button>`)}
  </div>`;
}

// usePoll calls fn now and every ms while the component is shown (and
// ms > 0), and when deps change.
export function usePoll(fn, ms, deps) {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    saved.current();
    if (!ms) return undefined;
    const id = setInterval(() => saved.current(), ms);
    return () => clearInterval(id);
  }, [ms, ...deps]);
}
