// One small uPlot chart per device: every numeric metric of the device on a shared time axis.
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
