// A time-series chart: uPlot (loaded as a classic script, window.uPlot)
// in a Preact component. The chart is made once and given new data with
// setData, so an overview left open does not grow.
import { html, useEffect, useRef, fmtShort } from './lib.js';

const palette = ['#2563eb', '#16a34a', '#dc2626', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563'];

const height = 180;

// Chart draws columns (times in seconds, then one array per series) with
// the series' labels, over the last span seconds.
export function Chart({ title, labels, columns, id, unit, span }) {
  const box = useRef(null);
  const plot = useRef(null);
  const last = columns[1] && columns[1].length ? columns[1][columns[1].length - 1] : null;

  useEffect(() => {
    const el = box.current;
    const opts = {
      width: Math.max(el.clientWidth, 200),
      height,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: (u, lo, hi) => [Math.max(lo, hi - span), hi] }, // a young broker: its whole life
        y: { range: (u, lo, hi) => [0, Math.max(hi, 1)] },
      },
      axes: [
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' } },
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, size: 56, values: (u, vals) => vals.map((v) => fmtShort(v) + (unit || '')) },
      ],
      series: [{}].concat(labels.map((label, i) => ({
        label, stroke: palette[i % palette.length], width: 1.5, points: { show: false },
        value: (u, v) => (v === null || v === undefined ? '–' : fmtShort(v) + (unit || '')),
      }))),
    };
    plot.current = new window.uPlot(opts, columns, el);
    let timer = null;
    const onResize = () => {
      clearTimeout(timer);
      timer = setTimeout(() => plot.current && plot.current.setSize({ width: Math.max(el.clientWidth, 200), height }), 100);
    };
    addEventListener('resize', onResize);
    return () => {
      removeEventListener('resize', onResize);
      clearTimeout(timer);
      plot.current.destroy();
      plot.current = null;
    };
  }, [labels.join(), span]);

  useEffect(() => {
    if (plot.current) plot.current.setData(columns);
  });

  return html`<section class="chart">
    <h3>${title}</h3>
    <div ref=${box} data-testid=${id} data-last=${last === null ? '' : String(last)}></div>
  </section>`;
}
