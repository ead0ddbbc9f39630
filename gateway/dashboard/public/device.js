// The device page (/device/<id>): registry facts, presence timeline, history charts, last payload, commands (declared
// forms, a free-form box and the history with results), refusals, firmware/OTA/flash history, and the actions
// (rotate secret, remove, metadata, OTA push). Data from GET /api/devices/<id>, polled while the tab is visible.
const $ = (id) => document.getElementById(id)
const deviceId = decodeURIComponent(location.pathname.replace(/^\/device\//, '').replace(/\/$/, ''))
const api = `/api/devices/${encodeURIComponent(deviceId)}`
const stats = { firstRenderMs: null, loads: 0 }
window.__edgewayDevice = stats   // figures for the benchmark and tests

let last = null            // the last GET answer
let removed = false
let metadataDirty = false
let declaredKey = ''
let pollTimer = 0
let chartsMounted = ''     // the metrics+range the charts were drawn for

// ------------------------------------------------------------------------------------------------ helpers
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue
    if (k === 'class') e.className = v
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v)
    else e.setAttribute(k, v === true ? '' : v)
  }
  for (const c of children) if (c != null) e.append(c)
  return e
}
const time = (ms) => (ms ? new Date(ms).toLocaleString() : '–')
const short = (ms) => { const d = new Date(ms); return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString() }
function ago(ms) {
  if (!ms) return 'never'
  const s = Math.max(0, (Date.now() - ms) / 1000)
  if (s < 60) return `${Math.round(s)} s ago`
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`
  return `${(s / 86400).toFixed(1)} d ago`
}
const json = (v) => (v === undefined ? '' : JSON.stringify(v))
function fmtValue(v) {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 10 ? 2 : 1)
  return String(v)
}
function setConn(text, cls) { const c = $('conn'); c.textContent = text; c.className = `pill ${cls}` }

async function call(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers }, cache: 'no-store', redirect: 'manual' }
  if (body !== undefined) {
    if (body instanceof Blob) { init.body = body; init.headers['content-type'] ??= 'application/octet-stream' }
    else { init.body = JSON.stringify(body); init.headers['content-type'] = 'application/json' }
  }
  const r = await fetch(path, init)
  if (r.status === 401 || r.type === 'opaqueredirect') { location.href = '/login'; throw new Error('login required') }
  const text = await r.text()
  let data = null
  try { data = JSON.parse(text) } catch { data = { error: text.trim() } }
  if (!r.ok) throw Object.assign(new Error(data?.error ?? `HTTP ${r.status}`), { status: r.status })
  return data
}

// ------------------------------------------------------------------------------------------------ loading
async function load() {
  clearTimeout(pollTimer)
  if (removed) return
  try {
    const v = await call('GET', api)
    last = v
    stats.loads++
    render(v)
    setConn('live', 'up')
    if (stats.firstRenderMs === null) requestAnimationFrame(() => { stats.firstRenderMs = performance.now(); document.body.dataset.ready = '1' })
  } catch (err) {
    if (err.status === 404) { showGone(err.message); return }
    setConn('offline', 'down')
  }
  // Faster while an OTA job runs: its progress is the point of looking.
  pollTimer = setTimeout(load, last?.ota?.active ? 500 : 2000)
}
document.addEventListener('visibilitychange', () => { if (!document.hidden) load() })

function showGone(message) {
  removed = true
  clearTimeout(pollTimer)
  const g = $('gone')
  g.hidden = false
  g.textContent = message
  for (const b of document.querySelectorAll('button, input, textarea, select')) b.disabled = true
  setConn('removed', 'down')
}

// ------------------------------------------------------------------------------------------------ rendering
function render(v) {
  const d = v.device
  $('device-id').textContent = d.id
  document.title = `${d.id} · edgeway`
  const p = $('presence')
  p.className = `presence ${d.online ? 'online' : 'offline'}`
  p.textContent = d.online ? 'online' : 'offline'
  renderFacts(d)
  renderPresence(v.journal.presence, v.now)
  renderPayload(v.lastPayload, d.metadata)
  renderDeclared(v.declaredCommands)
  renderCommands(v.journal.command)
  renderRefusals(v.journal.refusal)
  renderFirmware(v.journal.firmware)
  renderOta(v.ota, v.journal.ota)
  renderList($('flash-list'), v.journal.flash, (e) => [el('time', {}, short(e.at)), ' ', e.data.ok ? el('b', { class: 'ok' }, `flashed ${e.data.firmware ?? '(no HELLO)'}`) : el('b', { class: 'error' }, 'failed'), ` ${e.data.port} (${e.data.board})`, e.data.error ? ` ${e.data.error}` : ''])
  renderList($('admin-list'), v.journal.admin, (e) => [el('time', {}, short(e.at)), ' ', el('b', {}, e.data.action), ` by ${e.data.user}`])
  if (!metadataDirty && document.activeElement !== $('metadata')) $('metadata').value = JSON.stringify(d.metadata, null, 2)
  // The chart list follows new metrics and metadata edits (units, names), not every poll.
  if (stats.loads % 8 === 1) renderCharts()
}

function renderFacts(d) {
  const row = (k, val) => [el('dt', {}, k), el('dd', { 'data-fact': k }, val)]
  $('facts').replaceChildren(
    ...row('id', d.id), ...row('online', d.online ? 'yes' : 'no'), ...row('link', d.link ?? 'none yet'),
    ...row('firmware', d.firmware ?? 'unknown'), ...row('last seen', `${time(d.lastSeen)} (${ago(d.lastSeen)})`),
    ...row('first seen', time(d.firstSeen)), ...row('registered', time(d.createdAt)), ...row('secret', d.hasSecret ? 'set' : 'none'))
}

function renderList(list, entries, item) {
  if (!entries.length) { list.replaceChildren(el('li', { class: 'muted' }, 'none')); return }
  list.replaceChildren(...entries.slice(0, 100).map((e) => el('li', { 'data-entry': e.id }, ...item(e))))
}

/** Online/offline segments over the last 24 h, from the presence changes (newest first in the journal). */
function renderPresence(entries, now) {
  const from = now - 24 * 3600_000
  const asc = [...entries].reverse()
  const segs = []
  let state = null
  let at = from
  for (const e of asc) {
    if (e.at <= from) { state = e.data.online; continue }
    if (state !== null) segs.push({ from: at, to: e.at, online: state })
    state = e.data.online
    at = e.at
  }
  if (state !== null) segs.push({ from: at, to: now, online: state })
  const span = now - from
  $('timeline').replaceChildren(...segs.map((s) => el('span', {
    class: `seg ${s.online ? 'online' : 'offline'}`,
    style: `left:${((s.from - from) / span * 100).toFixed(3)}%;width:${Math.max(0.2, (s.to - s.from) / span * 100).toFixed(3)}%`,
    title: `${s.online ? 'online' : 'offline'} ${short(s.from)} – ${short(s.to)}`,
  })))
  renderList($('presence-list'), entries, (e) => [el('time', {}, short(e.at)), ' ', el('b', { class: e.data.online ? 'ok' : 'muted' }, e.data.online ? 'online' : 'offline'),
    ` ${e.data.link}${e.data.clientId && e.data.clientId !== deviceId ? ` (${e.data.clientId})` : ''}${e.data.reason ? `: ${e.data.reason}` : ''}`])
}

function renderPayload(lp, metadata) {
  if (!lp) { $('last-payload').textContent = 'none yet'; $('payload-metrics').replaceChildren(); $('payload-at').textContent = ''; return }
  $('payload-at').textContent = `${short(lp.ts)} · ${lp.link}${lp.seq != null ? ` · seq ${lp.seq}` : ''}`
  let obj = null
  if (lp.payload !== null) { try { obj = JSON.parse(lp.payload) } catch { obj = null } }
  $('last-payload').textContent = lp.payload === null ? '(opaque bytes, not JSON)' : obj ? JSON.stringify(obj, null, 2) : lp.payload
  const meta = (metadata && typeof metadata.metrics === 'object' && metadata.metrics) || {}
  const rows = obj ? Object.entries(obj).filter(([k]) => k !== 'ts' && k !== 'seq') : []
  $('payload-metrics').replaceChildren(...rows.map(([k, val]) => el('tr', { 'data-metric': k },
    el('th', {}, meta[k]?.name ?? k), el('td', { class: 'num' }, fmtValue(val)), el('td', { class: 'unit' }, meta[k]?.unit ?? ''))))
}

// ------------------------------------------------------------------------------------------------ commands
function renderDeclared(decls) {
  const key = JSON.stringify(decls)
  if (key === declaredKey) return
  declaredKey = key
  $('declared').replaceChildren(...decls.map((c) => {
    const fields = Object.entries(c.args ?? {}).map(([name, spec]) => {
      let input
      if (spec.type === 'boolean') input = el('input', { type: 'checkbox', name, checked: spec.default === true })
      else if (spec.enum) input = el('select', { name }, ...spec.enum.map((o) => el('option', { value: String(o), selected: o === spec.default }, String(o))))
      else input = el('input', {
        name, type: spec.type === 'string' ? 'text' : 'number', step: spec.type === 'integer' ? '1' : 'any',
        min: spec.min, max: spec.max, value: spec.default, required: spec.required, placeholder: spec.description, autocomplete: 'off',
      })
      input.dataset.type = spec.type
      return el('label', {}, name, input)
    })
    const form = el('form', { class: 'form inline declared-command', 'data-command': c.name },
      el('b', { title: c.description ?? '' }, c.name), ...fields, el('button', { type: 'submit' }, 'Send'))
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      const args = {}
      for (const i of form.querySelectorAll('[name]')) {
        const t = i.dataset.type
        if (t === 'boolean') args[i.name] = i.checked
        else if (i.value === '') continue
        else if (t === 'number' || t === 'integer') args[i.name] = Number(i.value)
        else if (i.tagName === 'SELECT' && !Number.isNaN(Number(i.value)) && c.args[i.name].enum.includes(Number(i.value))) args[i.name] = Number(i.value)
        else args[i.name] = i.value
      }
      send(c.name, Object.keys(c.args ?? {}).length ? args : null)
    })
    return form
  }))
}

const inflight = []   // commands sent from this page, waiting for their result
function renderCommands(entries) {
  const pending = inflight.map((c) => el('tr', { class: 'waiting', 'data-pending': c.ref },
    el('td', {}, short(c.at)), el('td', {}, c.name), el('td', { class: 'code' }, json(c.args)), el('td', { class: 'outcome' }, 'waiting…'), el('td', { class: 'num' }, '')))
  const done = entries.map((e) => el('tr', { class: e.data.ok ? 'ok' : 'failed', 'data-command-id': e.data.id },
    el('td', {}, short(e.at)), el('td', {}, e.data.name), el('td', { class: 'code' }, json(e.data.args)),
    el('td', { class: 'outcome' }, e.data.ok ? `ok ${json(e.data.result)}` : `${e.data.code}: ${e.data.error}`),
    el('td', { class: 'num' }, String(e.data.latencyMs))))
  $('command-history').replaceChildren(...pending, ...done)
  if (!pending.length && !done.length) $('command-history').replaceChildren(el('tr', {}, el('td', { colspan: '5', class: 'muted' }, 'none yet')))
}

let ref = 0
async function send(name, args) {
  const c = { ref: ++ref, name, args, at: Date.now() }
  inflight.unshift(c)
  if (last) renderCommands(last.journal.command)
  try { await call('POST', `${api}/commands`, { name, args }) } catch (err) { alert(`command not sent: ${err.message}`) } finally {
    inflight.splice(inflight.indexOf(c), 1)
    await load()
  }
}

$('free-command').addEventListener('submit', (ev) => {
  ev.preventDefault()
  const raw = $('free-args').value.trim()
  let args = null
  if (raw) { try { args = JSON.parse(raw) } catch { $('free-args').setCustomValidity('not valid JSON'); $('free-args').reportValidity(); return } }
  $('free-args').setCustomValidity('')
  send($('free-name').value.trim(), args)
})
$('free-args').addEventListener('input', () => $('free-args').setCustomValidity(''))

function renderRefusals(entries) {
  renderList($('refusal-list'), entries, (e) => [el('time', {}, short(e.at)), ' ', el('b', {}, e.data.reason), ' ', e.data.detail])
}

// ------------------------------------------------------------------------------------------------ firmware and OTA
function renderFirmware(entries) {
  renderList($('firmware-list'), entries, (e) => [el('time', {}, short(e.at)), ' ', el('b', {}, e.data.version), e.data.healthy === false ? ' (not healthy)' : ''])
}

function renderOta(ota, entries) {
  const a = ota.active
  $('ota-active').hidden = !a
  if (a) {
    $('ota-active-label').textContent = `job ${a.job}: ${a.version} ${a.state} ${Math.round(a.offset / Math.max(1, a.size) * 100)}%`
    $('ota-progress').max = a.size
    $('ota-progress').value = a.offset
  }
  const rows = ota.jobs.map((j) => el('tr', { 'data-job': j.job, 'data-state': j.state },
    el('td', {}, String(j.job)), el('td', {}, `${j.previousVersion ?? '?'} → ${j.version}`),
    el('td', { title: j.reason ?? '' }, j.state, j.reason ? el('div', { class: 'small muted' }, j.reason) : null)))
  $('ota-jobs').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: '3', class: 'muted' }, 'no OTA jobs'))]))
  void entries
}

$('ota-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  const file = $('ota-file').files[0]
  const status = $('ota-status')
  status.hidden = false
  status.className = 'small muted'
  status.textContent = `uploading ${file.size} bytes…`
  const q = new URLSearchParams({ version: $('ota-version').value.trim(), deadlineSeconds: $('ota-deadline').value || '120' })
  try {
    const p = await call('POST', `${api}/ota?${q}`, file, { 'content-type': 'application/octet-stream' })
    status.className = 'small ok'
    status.textContent = `job ${p.job} announced: ${p.version}, ${p.size} bytes`
  } catch (err) {
    status.className = 'small error'
    status.textContent = err.message
  }
  load()
})
$('ota-cancel').addEventListener('click', async () => {
  try { await call('POST', `${api}/ota/cancel`, {}) } catch (err) { $('ota-status').hidden = false; $('ota-status').textContent = err.message }
  load()
})

// ------------------------------------------------------------------------------------------------ actions
function actionError(err) { const e = $('action-error'); e.hidden = !err; e.textContent = err ? err.message : '' }

$('rotate').addEventListener('click', async () => {
  if (!confirm(`Issue a new secret for ${deviceId}? The old one stops working and its connections close now.`)) return
  actionError(null)
  try {
    const r = await call('POST', `${api}/rotate-secret`, {})
    const box = $('secret-box')
    box.hidden = false
    box.replaceChildren(
      el('p', {}, el('b', {}, 'New secret.'), ' It is shown only now: copy it.',
        r.disconnected ? ` ${r.disconnected} live connection${r.disconnected === 1 ? ' was' : 's were'} closed.` : ''),
      el('dl', {}, el('dt', {}, 'username'), el('dd', {}, el('code', {}, deviceId)), el('dt', {}, 'secret'), el('dd', {}, el('code', { id: 'new-secret' }, r.secret))),
      el('button', { type: 'button', onclick: () => { box.hidden = true; box.replaceChildren() } }, 'Done, hide it'))
  } catch (err) { actionError(err) }
  load()
})

$('remove').addEventListener('click', async () => {
  if (!confirm(`Remove ${deviceId}? It can no longer connect; its live connections close and its stored sessions are purged.`)) return
  actionError(null)
  try {
    const r = await call('DELETE', api)
    showGone(`${deviceId} was removed (${r.disconnected} connection${r.disconnected === 1 ? '' : 's'} closed).`)
  } catch (err) { actionError(err) }
})

$('metadata').addEventListener('input', () => { metadataDirty = true })
$('metadata-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  const status = $('metadata-status')
  status.hidden = false
  let metadata
  try { metadata = JSON.parse($('metadata').value) } catch (err) { status.className = 'small error'; status.textContent = `not valid JSON: ${err.message}`; return }
  try {
    await call('PUT', `${api}/metadata`, { metadata })
    metadataDirty = false
    status.className = 'small ok'
    status.textContent = 'saved'
    renderCharts(true)
  } catch (err) { status.className = 'small error'; status.textContent = err.message }
  load()
})

// ------------------------------------------------------------------------------------------------ charts
// One history chart per metric (renderHistoryChart from chart.js, over GET /api/history/<device>/<metric>); the
// metric list, units and names come from GET /api/history/<device> and are checked again now and then.
let chartModule = null
let charts = []
let chartsKey = ''
async function renderCharts(force = false) {
  const box = $('charts')
  $('csv').href = `/api/history/${encodeURIComponent(deviceId)}.csv`
  chartModule ??= await import('./chart.js').catch(() => ({}))
  if (typeof chartModule.renderHistoryChart !== 'function') {
    box.replaceChildren(el('p', { class: 'muted' }, 'History charts need the history store (renderHistoryChart in /ui/chart.js); not available on this gateway.'))
    return
  }
  let list
  try { list = await call('GET', `/api/history/${encodeURIComponent(deviceId)}`) } catch (err) {
    if (chartsKey !== 'error') box.replaceChildren(el('p', { class: 'muted' }, `history unavailable: ${err.message}`))
    chartsKey = 'error'
    return
  }
  const key = JSON.stringify(list.metrics.map((m) => [m.metric, m.unit, m.name]))
  if (key === chartsKey && !force) return
  chartsKey = key
  for (const c of charts) { try { c.ctl.destroy() } catch { /* gone */ } }
  if (!list.metrics.length) { charts = []; box.replaceChildren(el('p', { class: 'muted' }, 'no numeric history yet')); return }
  box.replaceChildren()
  const range = $('range').value
  charts = list.metrics.map((m) => {
    const slot = el('div', { class: 'metric-chart', 'data-metric-chart': m.metric })
    box.append(slot)
    return { metric: m.metric, ctl: chartModule.renderHistoryChart(slot, { device: deviceId, metrics: [m.metric], range, height: 160 }) }
  })
}
// ?range=30d opens the page on that range (a link to share); changing it updates the address.
const askedRange = new URLSearchParams(location.search).get('range')
if (askedRange && [...$('range').options].some((o) => o.value === askedRange)) $('range').value = askedRange
$('range').addEventListener('change', () => {
  for (const c of charts) c.ctl.setRange($('range').value)
  history.replaceState(null, '', `${location.pathname}?range=${encodeURIComponent($('range').value)}`)
})

load()
