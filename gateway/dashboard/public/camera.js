// The dashboard's camera panel: a WebRTC viewer of the gateway's camera, signalled over the dashboard WebSocket
// ("camera.*" messages). Plain ES module, no build step.
//   mountCamera(container, channel) with channel = { send(msg), onMessage(cb), onDisconnect(cb)? }; onMessage must
//   also deliver the messages that arrived before it was called (the camera.status sent when the socket opened).
// The container is shown only while the gateway reports the camera enabled: with the camera off (the default), or
// before the first status, it stays hidden and takes no space.
// The gateway offers a sendonly H.264 track; this page answers. It watches as soon as the camera is enabled and keeps
// its connection while the source is dead: the picture resumes when the source does.

const STATE_TEXT = {
  off: 'Camera off',
  starting: 'Camera starting…',
  live: 'Live',
  dead: 'Camera source down',
}

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag)
  Object.assign(e, props)
  for (const c of children) e.append(c)
  return e
}

function formatBitrate(bps) {
  if (!bps) return '0 kbit/s'
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`
}

export function mountCamera(container, channel) {
  const badge = el('span', { className: 'camera-state', textContent: '…' })
  const figures = el('span', { className: 'camera-figures' })
  const button = el('button', { type: 'button', className: 'camera-toggle', textContent: 'Stop' })
  const video = el('video', { className: 'camera-video', autoplay: true, muted: true, playsInline: true })
  video.setAttribute('playsinline', '')
  const overlay = el('div', { className: 'camera-overlay', textContent: 'Connecting…' })
  const stage = el('div', { className: 'camera-stage' }, [video, overlay])
  const root = el('section', { className: 'camera-panel' }, [
    el('header', { className: 'camera-head' }, [el('strong', { textContent: 'Camera' }), ' ', badge, ' ', figures, ' ', button]),
    stage,
  ])
  root.style.cssText = 'display:flex;flex-direction:column;gap:.5rem;max-width:100%'
  stage.style.cssText = 'position:relative;background:#111;aspect-ratio:16/9;width:100%;max-width:960px;border-radius:6px;overflow:hidden'
  video.style.cssText = 'width:100%;height:100%;object-fit:contain;display:block'
  overlay.style.cssText = 'position:absolute;inset:0;display:flex;align-items:center;justify-content:center;text-align:center;padding:1rem;color:#eee;background:rgba(0,0,0,.6);font:14px/1.4 system-ui,sans-serif'
  container.append(root)

  let status = null
  let pc = null
  let viewer = null
  let wanted = true // the user has not pressed Stop
  let refused = null // the gateway refused us (too many viewers, camera off): no automatic retry
  let chain = Promise.resolve() // signalling steps in arrival order (candidates wait for the offer)
  let retryTimer = null

  function render() {
    const s = status
    container.hidden = !s || !s.enabled
    const state = s ? s.state : 'starting'
    badge.textContent = STATE_TEXT[state] ?? state
    badge.dataset.state = state
    root.dataset.state = state
    badge.style.cssText = `padding:.1rem .4rem;border-radius:4px;color:#fff;background:${state === 'live' ? '#1a7f37' : state === 'dead' ? '#b42318' : '#6b7280'}`
    figures.textContent = s && s.enabled ? `${s.viewers} viewer${s.viewers === 1 ? '' : 's'} · ${formatBitrate(s.bitrate)}` : ''
    button.hidden = !s || !s.enabled
    button.textContent = wanted ? 'Stop' : 'Watch'
    let text = ''
    if (!s) text = 'Connecting…'
    else if (state === 'off') text = s.reason ?? 'The camera is off.'
    else if (!wanted) text = 'Stopped.'
    else if (refused) text = refused
    else if (state === 'dead') text = `The camera source is down: ${s.reason ?? 'unknown reason'}. The gateway restarts it.`
    else if (state === 'starting') text = 'Waiting for the camera source…'
    else if (!pc || pc.connectionState !== 'connected') text = 'Connecting to the camera…'
    else if (video.readyState < 2) text = 'Waiting for a keyframe…'
    overlay.textContent = text
    overlay.hidden = text === ''
    overlay.style.display = text === '' ? 'none' : 'flex'
  }

  function closePeer() {
    if (viewer) channel.send({ type: 'camera.leave', viewer })
    viewer = null
    if (pc) { pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = null; pc.close() }
    pc = null
    video.srcObject = null
  }

  function watch() {
    if (!wanted || refused || pc || !status || !status.enabled || viewer === 'pending') return
    viewer = 'pending'
    channel.send({ type: 'camera.watch' })
  }

  function onOffer(msg) {
    if (pc) { pc.close(); pc = null }
    viewer = msg.viewer
    const id = msg.viewer
    const peer = new RTCPeerConnection({ iceServers: msg.iceServers ?? [] })
    pc = peer
    peer.ontrack = (e) => {
      video.srcObject = e.streams[0] ?? new MediaStream([e.track])
      video.play().catch(() => undefined)
    }
    peer.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate) channel.send({ type: 'camera.candidate', viewer: id, candidate: e.candidate.candidate, mid: e.candidate.sdpMid })
    }
    peer.onconnectionstatechange = () => {
      render()
      if (peer.connectionState === 'failed' && pc === peer) {
        closePeer()
        retryTimer = setTimeout(() => { retryTimer = null; watch() }, 3000)
      }
    }
    chain = chain.then(async () => {
      await peer.setRemoteDescription({ type: 'offer', sdp: msg.sdp })
      const answer = await peer.createAnswer()
      await peer.setLocalDescription(answer)
      channel.send({ type: 'camera.answer', viewer: id, sdp: peer.localDescription.sdp })
    }).catch((err) => { refused = `This browser cannot play the camera: ${err.message}`; closePeer(); render() })
  }

  function onCandidate(msg) {
    const peer = pc
    if (!peer || msg.viewer !== viewer) return
    chain = chain.then(() => peer.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.mid })).catch(() => undefined)
  }

  channel.onMessage((msg) => {
    if (!msg || typeof msg.type !== 'string' || !msg.type.startsWith('camera.')) return
    switch (msg.type) {
      case 'camera.status':
        status = msg
        if (status.state === 'off' && pc) closePeer()
        watch()
        break
      case 'camera.offer': onOffer(msg); break
      case 'camera.candidate': onCandidate(msg); break
      case 'camera.error':
        // Errors about an earlier viewer are stale; errors without a viewer answer our pending watch.
        if (msg.viewer ? msg.viewer !== viewer : viewer !== 'pending') break
        viewer = null // the gateway has dropped it already: no camera.leave
        closePeer()
        refused = String(msg.message)
        break
    }
    render()
  })

  // The socket closed: the gateway dropped our viewer with it; the next status (after the reconnect) watches again.
  channel.onDisconnect?.(() => {
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null }
    viewer = null
    refused = null
    closePeer()
    render()
  })

  button.addEventListener('click', () => {
    wanted = !wanted
    refused = null
    if (!wanted) closePeer()
    else watch()
    render()
  })
  video.addEventListener('loadeddata', render)
  video.addEventListener('playing', render)
  render()

  const api = {
    video,
    element: root,
    /** The current RTCPeerConnection (for diagnostics: getStats). */
    get peer() { return pc },
    get status() { return status },
    destroy() {
      if (retryTimer) clearTimeout(retryTimer)
      wanted = false
      closePeer()
      root.remove()
      container.hidden = true
    },
  }
  // Reachable from the page for diagnostics and tests: document.querySelector('.camera-panel').camera
  root.camera = api
  return api
}
