// The dashboard page: one WebSocket, a small state, cards rendered on demand, charts redrawn once per frame.
import { DeviceChart } from './chart.js'
import { feedLive } from './chart.js'   // history: live-range history charts
import { mountRanges } from './history-view.js'   // history: the overview's chart range

const $ = (id) => document.getElementById(id)
const stats = { bytes: 0, messages: 0, firstRenderMs: null, connectedAt: null, snapshotAt: null }
window.__edgeway = stats   // figures for the benchmark and tests

const state = { devices: new Map(), latest: new Map(), historyPoints: 300, ws: null, ref: 0, pending: new Map(), adding: new Set() }
const cards = new Map()   // device id -> { el, chart, ... }
const channelListeners = new Map()   // prefix -> [cb]
// Channel messages that arrive before their first listener (the camera's status, sent once on connect, comes before
// camera.js has loaded): kept and replayed to it, so a module that loads late still sees the current state.
const channelBacklog = new Map()   // prefix -> [msg]
const disconnectListeners = []

// ------------------------------------------------------------------------------------------------ formatting
const fmtInt = (n) => (n == null ? '–' : Number(n).toLocaleString('en-US'))
function fmtBytes(n) {
  if (n == null) return '–'
  const u = ['B', 'KiB', 'MiB', 'GiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${u[i]}`
}
function fmtAge(seconds) {
  if (seconds == null) return '–'
  if (seconds < 60) return `${Math.round(seconds)} s`
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`
  return `${(seconds / 86400).toFixed(1)} d`
}
const ago = (ms) => (ms ? `${fmtAge(Math.max(0, (Date.now() - ms) / 1000))} ago` : 'never')
function fmtValue(v) {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 10 ? 2 : 1)
  return String(v)
}
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v)
    else e.setAttribute(k, v)
  }
  for (const c of children) if (c != null) e.append(c)
  return e
}

// ------------------------------------------------------------------------------------------------ devices
function card(id) {
  let c = cards.get(id)
  if (c) return c
  const chartEl = el('div', { class: 'chart' })
  const root = el('article', { class: 'card', 'data-device': id },
    el('header', {},
      el('span', { class: 'presence' }),
      el('h3', {}, el('a', { href: `/device/${encodeURIComponent(id)}`, title: 'this device\'s page: history and actions' }, id)),   // the device page (device.html)
      el('button', { type: 'button', class: 'link', title: 'send a command to this device', onclick: () => pickForCommand(id) }, 'command')),
    el('p', { class: 'meta' }),
    el('p', { class: 'values' }),
    chartEl)
  c = { root, chart: new DeviceChart(chartEl, state.historyPoints), meta: root.querySelector('.meta'), values: root.querySelector('.values'), presence: root.querySelector('.presence') }
  cards.set(id, c)
  const grid = $('devices')
  grid.querySelector('.empty')?.remove()
  // Keep the grid sorted by id.
  const after = [...grid.children].find((x) => x.dataset.device > id)
  grid.insertBefore(root, after ?? null)
  root.hidden = !matchesFilter(id)
  resizeObserver.observe(chartEl)
  ranges.attach(id, root, chartEl)   // history: range charts
  visibility.observe(chartEl)
  return c
}

function renderDevice(id) {
  const d = state.devices.get(id)
  if (!d) return
  const c = card(id)
  c.presence.className = `presence ${d.online ? 'online' : 'offline'}`
  c.presence.textContent = d.online ? 'online' : 'offline'
  c.root.classList.toggle('is-offline', !d.online)
  c.root.classList.toggle('no-data', c.chart.metrics.length === 0)
  const last = state.latest.get(id)
  const seen = Math.max(d.lastSeen ?? 0, last?.at ?? 0) || null
  c.meta.textContent = `${d.link ?? 'no link yet'} · fw ${d.firmware ?? '?'} · seen ${ago(seen)}`
  c.meta.dataset.seen = seen ?? ''
  if (last) c.values.textContent = Object.entries(last.metrics).slice(0, 8).map(([k, v]) => `${k} ${fmtValue(v)}`).join(' · ')
  c.root.dataset.points = c.chart.points
}

function renderDeviceCount() {
  const all = [...state.devices.values()]
  $('device-count').textContent = `${all.filter((d) => d.online).length} of ${all.length} online`
  $('devices-online').textContent = fmtInt(all.filter((d) => d.online).length)
  const sel = $('command-device')
  const chosen = sel.value
  const ids = [...state.devices.keys()].sort()
  if (sel.options.length !== ids.length || [...sel.options].some((o, i) => o.value !== ids[i])) {
    sel.replaceChildren(...ids.map((id) => el('option', { value: id }, id)))
    if (ids.includes(chosen)) sel.value = chosen
  }
}

const ranges = mountRanges($('ranges'))   // history: live | 1h | 24h | 7d | 30d

const matchesFilter = (id) => id.toLowerCase().includes($('device-filter').value.trim().toLowerCase())
$('device-filter').addEventListener('input', () => { for (const [id, c] of cards) c.root.hidden = !matchesFilter(id) })

function pickForCommand(id) {
  $('command-device').value = id
  $('command-name').focus()
  $('command-panel').scrollIntoView({ behavior: 'smooth', block: 'nearest' })
}

const resizeObserver = new ResizeObserver((entries) => {
  for (const e of entries) {
    const id = e.target.closest('.card')?.dataset.device
    cards.get(id)?.chart.resize(Math.floor(e.contentRect.width))
  }
})

const visibility = new IntersectionObserver((entries) => {
  for (const e of entries) cards.get(e.target.closest('.card')?.dataset.device)?.chart.setVisible(e.isIntersecting)
}, { rootMargin: '200px' })

// Redraws happen once per frame, however many readings arrived.
const dirty = new Set()
let frame = 0
function schedule(id) {
  dirty.add(id)
  if (!frame) frame = requestAnimationFrame(flushFrame)
}
function flushFrame() {
  frame = 0
  for (const id of dirty) { renderDevice(id); cards.get(id)?.chart.draw() }
  dirty.clear()
}
// "seen N s ago" keeps ticking without messages.
setInterval(() => { for (const id of state.devices.keys()) schedule(id) }, 5000)

// ------------------------------------------------------------------------------------------------ status
function renderStatus(s) {
  const h = $('health')
  h.textContent = s.status
  h.className = `pill ${s.status}`
  $('reasons').replaceChildren(...(s.reasons ?? []).map((r) => el('li', {}, r)))
  const o = s.outbox
  $('outbox-depth').textContent = fmtInt(o?.depth)
  $('outbox-bytes').textContent = fmtBytes(o?.bytes)
  $('outbox-oldest').textContent = o ? fmtAge(o.oldestAgeSeconds) : '–'
  $('outbox-drops').textContent = o ? fmtInt(Object.values(o.drops ?? {}).reduce((a, b) => a + b, 0)) : '–'
  $('outbox-dead').textContent = fmtInt(o?.deadLettered)
  const ups = s.upstreams ?? []
  $('upstreams').replaceChildren(...(ups.length ? ups.map((u) => el('tr', { 'data-upstream': u.name },
    el('td', {}, u.name),
    el('td', {}, el('span', { class: `state ${u.connected ? 'up' : 'down'}` }, u.connected ? 'connected' : 'down'),
      u.connected ? null : el('span', { class: 'muted' }, ` for ${fmtAge((Date.now() - Date.parse(u.since)) / 1000)}`),
      u.lastError ? el('div', { class: 'error small' }, u.lastError) : null),
    el('td', { class: 'num' }, fmtInt(u.lag)))) : [el('tr', {}, el('td', { colspan: '3', class: 'muted' }, 'none configured'))]))
}

// ---- alerts (gateway/alerts/): the header indicator and its list, replaced whole on every change
function renderAlerts(active) {
  const box = $('alerts')
  box.hidden = active.length === 0
  box.dataset.count = String(active.length)
  const critical = active.some((a) => a.severity === 'critical')
  $('alerts-count').className = `pill ${critical ? 'failed' : 'degraded'}`
  $('alerts-count').textContent = `${active.length} alert${active.length === 1 ? '' : 's'}`
  $('alert-list').replaceChildren(...active.map((a) => el('li', { class: a.severity, 'data-alert': a.id },
    el('time', { datetime: a.since }, new Date(a.since).toLocaleTimeString()), ' ', a.text)))
  if (!active.length) box.open = false
}
// ---- end alerts

function addRefusals(items) {
  const list = $('refusals')
  list.querySelector('.muted')?.remove()
  for (const r of items) {
    list.prepend(el('li', {}, el('time', {}, new Date(r.at).toLocaleTimeString()), ' ', el('b', {}, r.reason), ' ', r.device ? `${r.device}: ` : '', r.detail))
  }
  while (list.children.length > 50) list.lastChild.remove()
}

// ------------------------------------------------------------------------------------------------ socket
function send(msg) {
  if (state.ws?.readyState === WebSocket.OPEN) { state.ws.send(JSON.stringify(msg)); return true }
  return false
}

function onMessage(m) {
  const dot = m.type.indexOf('.')
  if (dot > 0) { channelMessage(m.type.slice(0, dot), m); return }
  switch (m.type) {
    case 'hello':
      $('gateway').textContent = `${m.gateway} · v${m.version}`
      state.historyPoints = m.historyPoints
      if (m.auth !== 'password') $('logout').hidden = true
      if (m.features?.camera) mountCamera()
      break
    case 'snapshot':
      stats.snapshotAt ??= performance.now()
      for (const d of m.devices) state.devices.set(d.id, d)
      for (const [id, l] of Object.entries(m.latest)) state.latest.set(id, { ...l, at: l.ts })
      for (const id of state.devices.keys()) card(id).chart.load(m.history[id] ?? {})
      for (const id of state.devices.keys()) renderDevice(id)
      renderDeviceCount()
      $('refusals').replaceChildren(el('li', { class: 'muted' }, 'none'))
      if (m.refusals.length) addRefusals(m.refusals)
      if (stats.firstRenderMs === null) {
        // Time to first render: the snapshot is in the DOM once the next frame has painted.
        requestAnimationFrame(() => { stats.firstRenderMs = performance.now(); document.body.dataset.ready = '1' })
      }
      break
    case 'device':
      state.devices.set(m.device.id, m.device)
      renderDeviceCount()
      schedule(m.device.id)
      break
    case 'deviceRemoved':
      state.devices.delete(m.device)
      cards.get(m.device)?.root.remove()
      cards.delete(m.device)
      ranges.detach(m.device)   // history
      renderDeviceCount()
      break
    case 'reading': {
      const prev = state.latest.get(m.device)
      state.latest.set(m.device, { ts: m.ts, at: m.at, metrics: { ...prev?.metrics, ...m.metrics } })
      if (!state.devices.has(m.device)) { state.devices.set(m.device, { id: m.device, online: true, link: m.link, firmware: null, lastSeen: m.at }); renderDeviceCount() }
      card(m.device).chart.add(m.ts, m.metrics)
      feedLive(m.device, m.ts, m.metrics)   // history
      schedule(m.device)
      break
    }
    case 'status': renderStatus(m); break
    case 'alerts': renderAlerts(m.active); break
    case 'refusals': addRefusals(m.items); break
    case 'commandResult': showResult(m.ref, m.result); break
    case 'deviceAdded': showCredentials(m); break
    case 'error':
      if (state.adding.delete(m.ref)) $('credentials').replaceChildren(el('p', { class: 'error' }, m.error))
      else if (m.ref != null && state.pending.has(m.ref)) showResult(m.ref, { ok: false, code: 'error', error: m.error })
      else console.warn('dashboard:', m.error)
      break
  }
}

let backoff = 500
function connect() {
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`)
  state.ws = ws
  let opened = false
  ws.onopen = () => { opened = true; backoff = 500; stats.connectedAt = performance.now(); setConn('live', 'up') }
  ws.onmessage = (ev) => {
    stats.bytes += ev.data.length
    stats.messages++
    let m
    try { m = JSON.parse(ev.data) } catch { return }
    onMessage(m)
  }
  ws.onclose = async (ev) => {
    setConn('offline', 'down')
    if (opened) for (const cb of disconnectListeners) cb()
    if (ev.code === 4401) { location.href = '/login'; return }
    // A refused upgrade looks like any failed connection: ask the page itself whether the session is gone.
    if (!opened) {
      const r = await fetch('/', { redirect: 'manual', cache: 'no-store' }).catch(() => null)
      if (r && (r.type === 'opaqueredirect' || r.status === 401)) { location.href = '/login'; return }
    }
    setTimeout(connect, backoff)
    backoff = Math.min(backoff * 2, 10000)
  }
}
function setConn(text, cls) { const c = $('conn'); c.textContent = text; c.className = `pill ${cls}` }

// ------------------------------------------------------------------------------------------------ commands
function showResult(ref, r) {
  const li = state.pending.get(ref)
  if (!li) return
  state.pending.delete(ref)
  li.classList.remove('waiting')
  li.classList.add(r.ok ? 'ok' : 'failed')
  li.querySelector('.outcome').textContent = r.ok ? `ok ${JSON.stringify(r.result)}` : `${r.code}: ${r.error}`
}

$('command-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  const device = $('command-device').value
  const name = $('command-name').value.trim()
  const raw = $('command-args').value.trim()
  let args = null
  if (raw) {
    try { args = JSON.parse(raw) } catch { $('command-args').setCustomValidity('not valid JSON'); $('command-args').reportValidity(); return }
  }
  $('command-args').setCustomValidity('')
  const ref = ++state.ref
  const li = el('li', { class: 'waiting', 'data-ref': String(ref) }, el('b', {}, `${device} ${name}`), ' ', el('span', { class: 'outcome' }, 'waiting…'))
  $('results').prepend(li)
  while ($('results').children.length > 20) $('results').lastChild.remove()
  state.pending.set(ref, li)
  if (!send({ type: 'command', ref, device, name, args })) showResult(ref, { ok: false, code: 'offline', error: 'not connected to the gateway' })
})
$('command-args').addEventListener('input', () => $('command-args').setCustomValidity(''))

$('add-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  const id = $('add-id').value.trim()
  const ref = ++state.ref
  state.adding.add(ref)
  const box = $('credentials')
  box.hidden = false
  box.replaceChildren(el('p', { class: 'muted' }, send({ type: 'addDevice', ref, id }) ? `adding ${id}…` : 'not connected to the gateway'))
})

function showCredentials(m) {
  state.adding.delete(m.ref)
  const box = $('credentials')
  box.hidden = false
  const host = location.hostname
  box.replaceChildren(
    el('p', {}, el('b', {}, `${m.device} added.`), ' Its secret is shown only now: copy it.'),
    el('dl', {}, el('dt', {}, 'username'), el('dd', {}, el('code', { id: 'new-device-id' }, m.device)),
      el('dt', {}, 'secret'), el('dd', {}, el('code', { id: 'new-device-secret' }, m.secret))),
    el('pre', {}, `mosquitto_pub -h ${host} -p ${m.mqttPort} -u ${m.device} -P '${m.secret}' -q 1 -t devices/${m.device}/telemetry -m '{"temperature":21.5}'`),
    el('button', { type: 'button', onclick: () => { box.hidden = true; box.replaceChildren() } }, 'Done, hide it'))
  $('add-id').value = ''
}

// ------------------------------------------------------------------------------------------------ camera seam
function channelMessage(prefix, m) {
  const listeners = channelListeners.get(prefix)
  if (listeners) { for (const cb of listeners) cb(m); return }
  const backlog = channelBacklog.get(prefix) ?? []
  backlog.push(m)
  if (backlog.length > 100) backlog.shift()
  channelBacklog.set(prefix, backlog)
}

function channelOf(prefix) {
  return {
    send: (msg) => send(msg),
    /** Every `<prefix>.*` message, starting with those that arrived before this call (in arrival order). */
    onMessage: (cb) => {
      const l = channelListeners.get(prefix) ?? []
      l.push(cb)
      channelListeners.set(prefix, l)
      const backlog = channelBacklog.get(prefix) ?? []
      channelBacklog.delete(prefix)
      for (const m of backlog) cb(m)
    },
    /** The WebSocket closed: the gateway has forgotten this browser's state (a reconnect sends a fresh status). */
    onDisconnect: (cb) => { disconnectListeners.push(cb) },
  }
}

// Mounted once (a reconnect's hello does not add a second panel). The box stays hidden: camera.js shows it only while
// the camera is enabled, so a gateway with the camera off (the default) shows no camera panel at all.
let cameraMounted = false
function mountCamera() {
  if (cameraMounted) return
  cameraMounted = true
  const box = $('camera')
  import('./camera.js').then((m) => m.mountCamera(box, channelOf('camera'))).catch((err) => {
    box.hidden = false
    box.replaceChildren(el('p', { class: 'error' }, `camera panel failed to load: ${err.message}`))
  })
}

connect()
