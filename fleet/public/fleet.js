// The fleet page: one WebSocket to the fleet server; every gateway's row, the chosen gateway's devices, commands
// and their results. All text from gateways goes in through textContent (never innerHTML): a gateway cannot inject
// markup. Ages are counted here from the server's clock (offset taken from each message), so the server need not
// resend a gateway every second just because its age grew.
const $ = (id) => document.getElementById(id)
const gateways = new Map()
let selected = null
let clockOffset = 0
let ws = null
let ref = 0
let rendered = false

function el(tag, text, cls) {
  const e = document.createElement(tag)
  if (text !== undefined && text !== null) e.textContent = String(text)
  if (cls) e.className = cls
  return e
}

function age(ms) {
  const s = Math.max(0, Math.round((Date.now() + clockOffset - ms) / 1000))
  if (s < 120) return `${s} s`
  if (s < 7200) return `${Math.round(s / 60)} min`
  return `${Math.round(s / 3600)} h`
}
const num = (v) => (v === null || v === undefined ? '–' : String(v))

function row(g) {
  const tr = el('tr')
  tr.dataset.gateway = g.id
  tr.dataset.state = g.state
  if (g.id === selected) tr.className = 'selected'
  tr.append(el('td', g.id, 'id'))
  const st = el('td', null, 'state'); st.append(el('span', g.state, `presence ${g.state === 'online' ? 'online' : g.state}`)); tr.append(st)
  tr.append(el('td', g.version ?? '–', 'version'))
  tr.append(el('td', num(g.backlog?.depth), 'num backlog'))
  tr.append(el('td', g.backlog ? `${g.backlog.oldestAgeSeconds} s` : '–', 'num oldest'))
  tr.append(el('td', num(g.upstreamLag), 'num lag'))
  tr.append(el('td', `${g.devicesOnline}/${g.devicesTotal}`, 'num devices'))
  tr.append(el('td', String(g.alerts.length), 'num alerts'))
  tr.append(el('td', age(g.lastMessageAt), 'num age'))
  tr.append(el('td', String(g.restarts), 'num restarts'))
  tr.addEventListener('click', () => select(g.id))
  return tr
}

function renderTable() {
  const filter = $('filter').value.trim().toLowerCase()
  const body = $('gateways').tBodies[0]
  const list = [...gateways.values()].filter((g) => !filter || g.id.toLowerCase().includes(filter)).sort((a, b) => a.id.localeCompare(b.id))
  body.replaceChildren(...list.map(row))
  const counts = { online: 0, stale: 0, dead: 0 }
  for (const g of gateways.values()) counts[g.state]++
  $('count-online').textContent = `${counts.online} online`
  $('count-stale').textContent = `${counts.stale} stale`
  $('count-dead').textContent = `${counts.dead} dead`
  $('gateway-count').textContent = String(gateways.size)
  $('empty').hidden = gateways.size > 0
  if (!rendered) { rendered = true; document.documentElement.dataset.firstRender = String(performance.now()) }
}

let renderDue = false
function renderSoon() {
  if (renderDue) return
  renderDue = true
  requestAnimationFrame(() => { renderDue = false; renderTable(); renderDetail() })
}

function renderDetail() {
  const g = selected && gateways.get(selected)
  $('detail').hidden = !g
  if (!g) return
  $('detail-id').textContent = g.id
  const s = $('detail-state'); s.textContent = g.state; s.className = `presence ${g.state}`
  const facts = [['Version', g.version], ['Boot', g.bootId], ['Uptime', g.uptimeSeconds === null ? null : `${g.uptimeSeconds} s`], ['TTL', `${g.ttlSeconds} s`],
    ['Last birth', g.lastBirthAt ? new Date(g.lastBirthAt).toLocaleString() : null], ['Last message', `${age(g.lastMessageAt)} ago`],
    ['Backlog', g.backlog ? `${g.backlog.depth} rows, ${g.backlog.bytes} bytes, oldest ${g.backlog.oldestAgeSeconds} s, ${g.backlog.deadLettered} dead-lettered` : null],
    ...g.upstreams.map((u) => [`Upstream ${u.name}`, `${u.connected ? 'connected' : 'down'}, lag ${num(u.lag)}`]),
    ...(g.deathReason ? [['Death', g.deathReason]] : [])]
  $('detail-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', k), el('dd', v ?? '–')]))
  $('detail-alerts').replaceChildren(...(g.alerts.length ? g.alerts.map((a) => el('li', `${a.severity}: ${a.text}`, a.severity)) : [el('li', 'none', 'muted')]))
}

function renderDevices(gateway, devices) {
  if (gateway !== selected) return
  $('detail-device-count').textContent = `${devices.filter((d) => d.online).length}/${devices.length} online`
  $('devices').tBodies[0].replaceChildren(...devices.map((d) => {
    const tr = el('tr'); tr.dataset.device = d.id
    tr.append(el('td', d.id))
    const st = el('td'); st.append(el('span', d.online ? 'online' : 'offline', `presence ${d.online ? 'online' : 'offline'}`)); tr.append(st)
    tr.append(el('td', d.link ?? '–'), el('td', d.firmware ?? '–'))
    tr.addEventListener('click', () => { $('cmd-device').value = d.id })
    return tr
  }))
  $('cmd-devices').replaceChildren(...devices.map((d) => { const o = el('option'); o.value = d.id; return o }))
}

function select(id) {
  selected = id
  renderSoon()
  send({ type: 'devices', gateway: id })
}

function send(msg) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)) }

function addEvents(items) {
  const list = $('events')
  for (const e of items) {
    const li = el('li', null, e.to)
    li.append(el('time', new Date(e.at).toLocaleTimeString()), document.createTextNode(` ${e.gateway}: ${e.from ?? 'new'} → ${e.to} (${e.why})`))
    list.prepend(li)
  }
  while (list.children.length > 100) list.lastChild.remove()
}

function onMessage(m) {
  if (typeof m.now === 'number') clockOffset = m.now - Date.now()
  switch (m.type) {
    case 'fleet':
      gateways.clear()
      for (const g of m.gateways) gateways.set(g.id, g)
      $('events').replaceChildren()
      addEvents(m.events)
      $('broker').textContent = m.broker ? 'broker connected' : 'broker down'
      $('broker').className = `pill ${m.broker ? 'ok' : 'failed'}`
      renderTable(); renderDetail()
      if (selected) send({ type: 'devices', gateway: selected })
      break
    case 'gateway':
      gateways.set(m.gateway.id, m.gateway)
      if (m.gateway.id === selected) send({ type: 'devices', gateway: selected })
      renderSoon()
      break
    case 'events': addEvents(m.items); break
    case 'summary':
      $('broker').textContent = m.broker ? 'broker connected' : 'broker down'
      $('broker').className = `pill ${m.broker ? 'ok' : 'failed'}`
      renderSoon()
      break
    case 'devices': renderDevices(m.gateway, m.devices); break
    case 'commandResult': {
      const li = document.querySelector(`#results li[data-ref="${CSS.escape(String(m.ref))}"]`)
      if (!li) break
      const r = m.result
      li.className = r.ok ? 'ok' : 'failed'
      li.querySelector('.outcome').textContent = r.ok ? `ok ${JSON.stringify(r.result)}` : `${r.code}: ${r.error}`
      break
    }
    case 'error': console.warn('fleet:', m.error); break
  }
}

function connect() {
  ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`)
  ws.onopen = () => { $('conn').textContent = 'live'; $('conn').className = 'pill ok' }
  ws.onmessage = (e) => { try { onMessage(JSON.parse(e.data)) } catch (err) { console.error(err) } }
  ws.onclose = (e) => {
    $('conn').textContent = 'disconnected'; $('conn').className = 'pill failed'
    if (e.code === 4401) { location.href = '/login'; return }
    setTimeout(connect, 2000)
  }
}

$('filter').addEventListener('input', renderSoon)
$('command').addEventListener('submit', (e) => {
  e.preventDefault()
  if (!selected) return
  let args
  try { args = JSON.parse($('cmd-args').value || 'null') } catch { alert('the arguments are not valid JSON'); return }
  const r = ++ref
  const device = $('cmd-device').value.trim(), name = $('cmd-name').value.trim()
  const li = el('li', null, 'waiting'); li.dataset.ref = String(r)
  li.append(el('span', `${selected} / ${device} / ${name}: `), el('span', 'waiting…', 'outcome'))
  $('results').prepend(li)
  send({ type: 'command', ref: r, gateway: selected, device, name, args })
})
// Ages tick on the page itself.
setInterval(() => { for (const td of document.querySelectorAll('#gateways td.age')) { const g = gateways.get(td.parentElement.dataset.gateway); if (g) td.textContent = age(g.lastMessageAt) } }, 1000)
connect()
