// Device charts with uPlot. DeviceChart: the overview card's live chart (every numeric metric, one axis, fed by the
// WebSocket). renderHistoryChart: a chart of the history API (/api/history/...) with time ranges (live, 1h, 24h, 7d,
// 30d), drag-to-zoom, pan and reset, one y-axis per unit and local times with dates; exported here and on
// window.edgewayCharts for pages that are not modules (the device page).
import uPlot from '/ui/vendor/uPlot.esm.js'

const COLORS = ['#2f7ed8', '#e4572e', '#17a589', '#a05cc8', '#f0a202', '#5d6d7e']
const MAX_SERIES = 6

export class DeviceChart {
  /** @param {HTMLElement} el @param {number} maxPoints */
  constructor(el, maxPoints) {
    this.el = el
    this.maxPoints = maxPoints
    this.metrics = []        // metric names, in series order
    this.xs = []             // seconds
    this.ys = []             // one array per metric, null where a reading lacked it
    this.plot = null
    this.dirty = false
    // Off-screen charts keep their data but no uPlot instance: a page of 100 devices draws only what is seen.
    this.visible = false
  }

  setVisible(v) {
    this.visible = v
    if (v && !this.plot) this.rebuild()
  }

  get points() { return this.xs.length }

  /** History from the server: metric -> [timestamps s, values]; aligned on the union of timestamps. */
  load(history) {
    const names = Object.keys(history).slice(0, MAX_SERIES)
    const all = new Set()
    for (const n of names) for (const t of history[n][0]) all.add(t)
    this.xs = [...all].sort((a, b) => a - b).slice(-this.maxPoints)
    const index = new Map(this.xs.map((t, i) => [t, i]))
    this.metrics = names
    this.ys = names.map((n) => {
      const col = new Array(this.xs.length).fill(null)
      const [ts, vs] = history[n]
      for (let i = 0; i < ts.length; i++) { const k = index.get(ts[i]); if (k !== undefined) col[k] = vs[i] }
      return col
    })
    this.rebuild()
  }

  /** One live reading (ts in ms). */
  add(ts, metrics) {
    let changed = false
    for (const [n, v] of Object.entries(metrics)) {
      if (typeof v !== 'number' || this.metrics.includes(n) || this.metrics.length >= MAX_SERIES) continue
      this.metrics.push(n)
      this.ys.push(new Array(this.xs.length).fill(null))
      changed = true
    }
    const t = ts / 1000
    // Readings can arrive coalesced or out of order after a reconnect: keep the axis sorted.
    if (this.xs.length && t <= this.xs[this.xs.length - 1]) return
    this.xs.push(t)
    this.metrics.forEach((n, i) => this.ys[i].push(typeof metrics[n] === 'number' ? metrics[n] : null))
    if (this.xs.length > this.maxPoints) { this.xs.shift(); for (const y of this.ys) y.shift() }
    if (changed) this.rebuild()
    else this.dirty = true
  }

  /** Called from the page's animation frame: at most one redraw per frame. */
  draw() {
    if (!this.dirty || !this.plot) return
    this.dirty = false
    this.plot.setData([this.xs, ...this.ys])
  }

  resize(width) {
    if (this.plot && width > 0) this.plot.setSize({ width, height: this.height() })
  }

  height() { return 120 }

  rebuild() {
    this.plot?.destroy()
    this.plot = null
    this.dirty = false
    if (this.metrics.length === 0 || !this.visible) return
    const width = Math.max(200, this.el.clientWidth || 300)
    this.plot = new uPlot({
      width, height: this.height(),
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [{ size: 28, font: '11px system-ui', stroke: '#888', grid: { stroke: 'rgba(128,128,128,.15)' } },
        { size: 44, font: '11px system-ui', stroke: '#888', grid: { stroke: 'rgba(128,128,128,.15)' } }],
      series: [{}, ...this.metrics.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: false } }))],
    }, [this.xs, ...this.ys], this.el)
  }
}

// ------------------------------------------------------------------------------------------------ history charts

export const RANGES = { live: 15 * 60_000, '1h': 3600_000, '24h': 86400_000, '7d': 7 * 86400_000, '30d': 30 * 86400_000 }
const LIVE_MAX_POINTS = 3000
/** Live history charts by device: app.js feeds them every WebSocket reading (feedLive). */
const liveCharts = new Map()

const pad2 = (n) => String(n).padStart(2, '0')
const dayKey = (d) => `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`
const fmtTime = (d, secs) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}${secs ? ':' + pad2(d.getSeconds()) : ''}`
const fmtDate = (d) => d.toLocaleDateString(undefined, { weekday: 'short', day: 'numeric', month: 'short' })
/** Full local date and time for the legend and tooltips. */
export const fmtDateTime = (ms) => { const d = new Date(ms); return `${fmtDate(d)} ${fmtTime(d, true)}` }

/** x-axis ticks in local time: "14:05", with the date under the first tick of each day. */
function timeTicks(u, splits) {
  let prev = null
  const span = (u.scales.x.max ?? 0) - (u.scales.x.min ?? 0)
  const labels = splits.map((s) => {
    const d = new Date(s * 1000)
    const k = dayKey(d)
    const first = k !== prev
    prev = k
    const time = fmtTime(d, span < 120)
    return first ? `${time}\n${fmtDate(d)}` : time
  })
  // The axis is drawn on the canvas: its labels also go on the chart element (tests, and a title for the range).
  const box = u.root.closest('.hchart')
  if (box) box.dataset.xticks = labels.join(' | ')
  return labels
}

function fmtNum(v) {
  if (v == null || !Number.isFinite(v)) return '–'
  const a = Math.abs(v)
  return a !== 0 && (a < 0.01 || a >= 1e6) ? v.toExponential(2) : String(Math.round(v * 100) / 100)
}

/** Scales: one per unit; a metric without a unit gets a scale (and axis) of its own. */
function scaleKey(m) { return m.unit ? `u:${m.unit}` : `m:${m.metric}` }

async function getJson(url) {
  const r = await fetch(url, { cache: 'no-store', credentials: 'same-origin' })
  if (!r.ok) {
    let msg = `${r.status}`
    try { msg = (await r.json()).error ?? msg } catch { /* not JSON */ }
    throw new Error(msg)
  }
  return r.json()
}

/** Union of timestamps of several series -> uPlot's aligned data (null where a series has no point). */
function align(series) {
  const all = new Set()
  for (const s of series) for (const t of s.t) all.add(t)
  const xs = [...all].sort((a, b) => a - b)
  const index = new Map(xs.map((t, i) => [t, i]))
  const cols = []
  for (const s of series) {
    for (const ys of s.cols) {
      const col = new Array(xs.length).fill(null)
      for (let i = 0; i < s.t.length; i++) col[index.get(s.t[i])] = ys[i]
      cols.push(col)
    }
  }
  return [xs.map((t) => t / 1000), ...cols]
}

/**
 * A history chart in `container`: `device` (id), `metrics` (names; omitted: every metric the API lists), `range`
 * (live | 1h | 24h | 7d | 30d). Returns a controller: setRange(range), reset() (undo zoom/pan), pan(±fraction),
 * zoom(fromMs, toMs), reload(), resize(width), destroy(), and `state` ({ range, from, to, tier, points, error }).
 * The container gets data-state (loading | ready | error), data-tier (raw | rollup | mixed) and data-points.
 */
export function renderHistoryChart(container, { device, metrics = null, range = '24h', height = 180 } = {}) {
  if (!(range in RANGES)) throw new Error(`range must be one of ${Object.keys(RANGES).join(', ')}`)
  const root = document.createElement('div')
  root.className = 'hchart'
  const bar = document.createElement('div')
  bar.className = 'hchart-bar'
  const info = document.createElement('span')
  info.className = 'hchart-info muted'
  const mkBtn = (label, title, fn, cls) => {
    const b = document.createElement('button')
    b.type = 'button'; b.className = `link ${cls}`; b.textContent = label; b.title = title
    b.addEventListener('click', fn)
    bar.append(b)
    return b
  }
  const plotEl = document.createElement('div')
  plotEl.className = 'hchart-plot'
  root.append(bar, plotEl)
  container.append(root)

  const st = { range, from: 0, to: 0, zoomed: false, tier: null, points: 0, error: null, meta: [], plot: null, data: null, seq: 0, destroyed: false }
  mkBtn('◀', 'earlier', () => ctl.pan(-0.5), 'hchart-back')
  const resetBtn = mkBtn('reset zoom', 'back to the whole range', () => ctl.reset(), 'hchart-reset')
  mkBtn('▶', 'later', () => ctl.pan(0.5), 'hchart-fwd')
  const csv = document.createElement('a')
  csv.className = 'hchart-csv'; csv.textContent = 'CSV'; csv.title = 'export this range as CSV'
  bar.append(csv, info)

  const setState = (s) => { root.dataset.state = s; container.dataset.historyState = s }

  function windowFor(r) {
    const to = Date.now()
    return { from: to - RANGES[r], to }
  }

  async function load() {
    const seq = ++st.seq
    setState('loading')
    resetBtn.hidden = !st.zoomed
    csv.href = `/api/history/${encodeURIComponent(device)}.csv?from=${Math.floor(st.from)}&to=${Math.ceil(st.to)}`
    try {
      const list = await getJson(`/api/history/${encodeURIComponent(device)}`)
      const wanted = metrics ? list.metrics.filter((m) => metrics.includes(m.metric)) : list.metrics
      const width = Math.max(200, plotEl.clientWidth || container.clientWidth || 400)
      const points = Math.min(4000, Math.max(100, Math.round(width)))
      const q = `from=${Math.floor(st.from)}&to=${Math.ceil(st.to)}&points=${points}`
      const answers = await Promise.all(wanted.map((m) => getJson(`/api/history/${encodeURIComponent(device)}/${encodeURIComponent(m.metric)}?${q}`)))
      if (seq !== st.seq || st.destroyed) return
      st.meta = wanted
      st.tier = answers.length === 0 ? null : answers.every((a) => a.tier === answers[0].tier) ? answers[0].tier : 'mixed'
      st.error = null
      draw(answers)
    } catch (err) {
      if (seq !== st.seq || st.destroyed) return
      st.error = err.message
      info.textContent = `history unavailable: ${err.message}`
      setState('error')
    }
  }

  function draw(answers) {
    // Per metric: one series (raw, or the rollup's avg) plus, for rollups, min and max as a band around it.
    const series = answers.map((a) => (a.tier === 'raw' ? { t: a.t, cols: [a.v] } : { t: a.t, cols: [a.avg, a.min, a.max] }))
    st.data = align(series)
    st.points = answers.reduce((n, a) => n + a.t.length, 0)
    root.dataset.tier = st.tier ?? ''
    root.dataset.points = String(st.points)
    const bucket = answers.find((a) => a.bucketMs)?.bucketMs
    info.textContent = `${fmtDateTime(st.from)} – ${fmtDateTime(st.to)} · ${st.tier === 'raw' ? 'every reading' : st.tier ? `${bucket / 60000}-min min/avg/max` : 'no metrics'}`
    build(answers)
    setState('ready')
  }

  function build(answers) {
    st.plot?.destroy()
    st.plot = null
    plotEl.replaceChildren()
    if (answers.length === 0) { plotEl.textContent = 'no history for this range'; return }
    const scales = { x: { time: true, range: () => [st.from / 1000, st.to / 1000] } }
    const axes = [{
      size: 44, font: '11px system-ui', stroke: '#888', grid: { stroke: 'rgba(128,128,128,.15)' }, values: timeTicks,
    }]
    const seriesOpts = [{ label: 'time', value: (u, v) => (v == null ? '–' : fmtDateTime(v * 1000)) }]
    const bands = []
    let idx = 1
    answers.forEach((a, i) => {
      const m = st.meta[i]
      const key = scaleKey(m)
      if (!scales[key]) {
        scales[key] = { auto: true }
        const n = Object.keys(scales).length - 2
        axes.push({ scale: key, side: n % 2 === 0 ? 3 : 1, label: m.unit ?? (m.name ?? m.metric), labelSize: 14, labelFont: '11px system-ui', size: 50, font: '11px system-ui', stroke: COLORS[i % COLORS.length], grid: { show: n === 0, stroke: 'rgba(128,128,128,.15)' }, values: (u, splits) => splits.map(fmtNum) })
      }
      const color = COLORS[i % COLORS.length]
      const label = `${m.name ?? m.metric}${m.unit ? ` (${m.unit})` : ''}`
      seriesOpts.push({ label, scale: key, stroke: color, width: 1.5, spanGaps: true, points: { show: false }, value: (u, v) => fmtNum(v) })
      idx++
      if (a.tier === 'rollup') {
        seriesOpts.push({ label: `${label} min`, scale: key, stroke: 'transparent', width: 0, points: { show: false }, spanGaps: true, value: (u, v) => fmtNum(v) })
        seriesOpts.push({ label: `${label} max`, scale: key, stroke: 'transparent', width: 0, points: { show: false }, spanGaps: true, value: (u, v) => fmtNum(v) })
        bands.push({ series: [idx + 1, idx], fill: color + '22' })
        idx += 2
      }
    })
    const width = Math.max(200, plotEl.clientWidth || container.clientWidth || 400)
    st.plot = new uPlot({
      width, height,
      scales, axes, series: seriesOpts, bands,
      legend: { show: true, live: true },
      // Drag selects a window: it is loaded again at that resolution (zoom); double-click or "reset zoom" undoes it.
      cursor: { drag: { x: true, y: false, setScale: false }, bind: { dblclick: () => () => { ctl.reset(); return null } } },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 5) return
          const a = u.posToVal(u.select.left, 'x') * 1000
          const b = u.posToVal(u.select.left + u.select.width, 'x') * 1000
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false)
          ctl.zoom(a, b)
        }],
      },
    }, st.data, plotEl)
    // Hide the min/max rows of the legend: the band shows them; the values stay in the hover readout of the avg row.
    plotEl.querySelectorAll('.u-legend tr').forEach((tr) => { if (/ (min|max)$/.test(tr.querySelector('.u-label')?.textContent ?? '')) tr.hidden = true })
  }

  let relistAt = 0
  function onLive(ts, values) {
    if (st.range !== 'live' || st.zoomed || st.destroyed || root.dataset.state === 'loading') return
    const names = st.meta.map((m) => m.metric)
    // A metric the chart does not have yet (or a busy device whose last 15 min came as rollups): load again, at most every 5 s.
    if (!st.plot || st.tier !== 'raw' || Object.entries(values).some(([n, v]) => typeof v === 'number' && !names.includes(n) && (!metrics || metrics.includes(n)))) {
      if (Date.now() > relistAt) { relistAt = Date.now() + 5000; Object.assign(st, windowFor('live')); void load() }
      return
    }
    if (!names.some((n) => typeof values[n] === 'number')) return
    const t = ts / 1000
    const xs = st.data[0]
    if (xs.length && t <= xs[xs.length - 1]) return
    xs.push(t)
    let col = 1
    for (const n of names) { st.data[col].push(typeof values[n] === 'number' ? values[n] : null); col++ }
    // live mode is raw only: one column per metric
    st.to = ts
    st.from = ts - RANGES.live
    while (xs.length > LIVE_MAX_POINTS || (xs.length && xs[0] < st.from / 1000)) { for (const c of st.data) c.shift() }
    st.points = xs.length
    root.dataset.points = String(st.points)
    st.plot.setData(st.data)
  }

  const ctl = {
    get state() { return { range: st.range, from: st.from, to: st.to, zoomed: st.zoomed, tier: st.tier, points: st.points, error: st.error } },
    setRange(r) {
      if (!(r in RANGES)) throw new Error(`range must be one of ${Object.keys(RANGES).join(', ')}`)
      st.range = r
      st.zoomed = false
      Object.assign(st, windowFor(r))
      return load()
    },
    reset() { return ctl.setRange(st.range) },
    zoom(from, to) {
      if (!(to > from)) return Promise.resolve()
      st.zoomed = true
      st.from = from; st.to = Math.min(to, Date.now())
      return load()
    },
    pan(fraction) {
      const span = st.to - st.from
      let from = st.from + span * fraction
      let to = from + span
      if (to > Date.now()) { to = Date.now(); from = to - span }
      st.zoomed = true
      st.from = from; st.to = to
      return load()
    },
    reload: () => load(),
    resize(w) { if (st.plot && w > 0) st.plot.setSize({ width: w, height }) },
    destroy() {
      st.destroyed = true
      st.plot?.destroy()
      root.remove()
      liveCharts.get(device)?.delete(onLive)
    },
  }
  if (!liveCharts.has(device)) liveCharts.set(device, new Set())
  liveCharts.get(device).add(onLive)
  Object.assign(st, windowFor(range))
  ctl.ready = load()
  return ctl
}

/** Every WebSocket reading (app.js): live-range history charts of that device append it. */
export function feedLive(device, ts, metrics) {
  const set = liveCharts.get(device)
  if (set) for (const fn of set) fn(ts, metrics)
}

// For pages that are not ES modules (or load this one dynamically): the same functions on window.
if (typeof window !== 'undefined') window.edgewayCharts = { renderHistoryChart, feedLive, RANGES, fmtDateTime }
