// The overview's chart range (live, 1 h, 24 h, 7 d, 30 d): "live" keeps each card's WebSocket chart (DeviceChart);
// any other range swaps in a history chart (renderHistoryChart) on the cards that are on screen, loaded from the API.
import { renderHistoryChart, RANGES } from './chart.js'

export function mountRanges(group) {
  let range = 'live'
  const cards = new Map()   // device id -> { root, liveEl, chart, visible }
  const apply = (id) => {
    const c = cards.get(id)
    if (!c) return
    const want = range !== 'live' && c.visible
    c.liveEl.hidden = range !== 'live'
    if (!want) { c.chart?.destroy(); c.chart = null; return }
    if (c.chart) { if (c.chart.state.range !== range || c.chart.state.zoomed) void c.chart.setRange(range); return }
    c.chart = renderHistoryChart(c.slot, { device: id, range, height: 150 })
  }
  const seen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const id = e.target.closest('.card')?.dataset.device
      const c = cards.get(id)
      if (!c) continue
      c.visible = e.isIntersecting
      // Leaving the screen keeps a loaded chart; only entering it loads one.
      if (c.visible) apply(id)
    }
  }, { rootMargin: '200px' })
  const resize = new ResizeObserver((entries) => {
    for (const e of entries) cards.get(e.target.closest('.card')?.dataset.device)?.chart?.resize(Math.floor(e.contentRect.width))
  })
  const buttons = [...group.querySelectorAll('button[data-range]')]
  const select = (r) => {
    if (!(r in RANGES)) return
    range = r
    for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.range === r))
    group.dataset.range = r
    for (const id of cards.keys()) apply(id)
  }
  for (const b of buttons) b.addEventListener('click', () => select(b.dataset.range))
  select('live')
  return {
    get range() { return range },
    select,
    /** A new card: its live chart element; the history chart goes in a slot after it. */
    attach(id, root, liveEl) {
      const slot = document.createElement('div')
      slot.className = 'hslot'
      liveEl.after(slot)
      cards.set(id, { root, liveEl, slot, chart: null, visible: false })
      seen.observe(slot)
      resize.observe(slot)
      apply(id)
    },
    detach(id) { cards.get(id)?.chart?.destroy(); cards.delete(id) },
  }
}
