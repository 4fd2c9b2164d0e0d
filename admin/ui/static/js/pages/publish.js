// Publish: a message from the broker's in-process client
// (POST /api/v1/publish), with MQTT 5 properties.
import { html, useState, Notice } from '../lib.js';
import { api } from '../api.js';

export function Publish() {
  const [m, setM] = useState({ topic: '', payload: '', qos: 0, retain: false, content_type: '', response_topic: '', expiry: '' });
  const [props, setProps] = useState([]);
  const [error, setError] = useState(null);
  const [done, setDone] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k, v) => setM(Object.assign({}, m, { [k]: v }));
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const body = { topic: m.topic, payload: m.payload, qos: Number(m.qos), retain: m.retain, content_type: m.content_type,
        response_topic: m.response_topic, message_expiry_interval: Number(m.expiry) || 0,
        user_properties: props.filter((p) => p.key !== '') };
      const r = await api('publish', { method: 'POST', body });
      setDone({ message: 'Published ' + r.payload_size + ' bytes to ' + r.topic });
    } catch (err) { setError(err); } finally { setBusy(false); }
  };
  const setProp = (i, k, v) => setProps(props.map((p, j) => (j === i ? Object.assign({}, p, { [k]: v }) : p)));
  return html`<div><h1>Publish</h1>
    <form class="form panel" onSubmit=${submit}>
      <label class="block">Topic <input required data-testid="pub-topic" value=${m.topic} onInput=${(e) => set('topic', e.target.value)}/></label>
      <label class="block">Payload <textarea data-testid="pub-payload" value=${m.payload} onInput=${(e) => set('payload', e.target.value)}></textarea></label>
      <div class="toolbar">
        <label>QoS <select value=${m.qos} onChange=${(e) => set('qos', e.target.value)}><option value="0">0</option><option value="1">1</option><option value="2">2</option></select></label>
        <label><input type="checkbox" data-testid="pub-retain" checked=${m.retain} onChange=${(e) => set('retain', e.target.checked)}/> retain</label>
      </div>
      <label class="block">Content type <input value=${m.content_type} placeholder="application/json" onInput=${(e) => set('content_type', e.target.value)}/></label>
      <label class="block">Response topic <input value=${m.response_topic} onInput=${(e) => set('response_topic', e.target.value)}/></label>
      <label class="block">Message expiry (seconds) <input type="number" min="0" value=${m.expiry} onInput=${(e) => set('expiry', e.target.value)}/></label>
      <div><h3>User properties</h3>
        ${props.map((p, i) => html`<div class="toolbar">
          <input aria-label="Key" placeholder="key" value=${p.key} onInput=${(e) => setProp(i, 'key', e.target.value)}/>
          <input aria-label="Value" placeholder="value" value=${p.value} onInput=${(e) => setProp(i, 'value', e.target.value)}/>
          <button type="button" class="btn small" onClick=${() => setProps(props.filter((_, j) => j !== i))}>Remove</button></div>`)}
        <button type="button" class="btn small" onClick=${() => setProps([...props, { key: '', value: '' }])}>Add a user property</button>
      </div>
      <${Notice} error=${error}/><${Notice} error=${done} kind="ok"/>
      <div><button type="submit" class="btn primary" data-testid="pub-send" disabled=${busy}>Publish</button></div>
    </form>
  </div>`;
}
