// A voice connection over Discord's voice gateway (v8) with WebRTC media:
// Select Protocol "webrtc" with a cut-down offer, and a remote description
// built from the server's Session Description fragment (webrtc.md §1–§2).

// parseSDP reads what Select Protocol and the answer need from an SDP.
export function parseSDP(sdp) {
  const out = { mid: '0', ssrc: 0, opusPT: 0 };
  for (const raw of sdp.split(/\r?\n/)) {
    const line = raw.trim();
    let m;
    if ((m = /^a=ice-ufrag:(.+)$/.exec(line))) out.ufrag = m[1];
    else if ((m = /^a=ice-pwd:(.+)$/.exec(line))) out.pwd = m[1];
    else if ((m = /^a=fingerprint:sha-256 (.+)$/i.exec(line))) out.fingerprint = m[1];
    else if ((m = /^a=mid:(.+)$/.exec(line))) out.mid = m[1];
    else if ((m = /^a=rtpmap:(\d+) opus\/48000/i.exec(line)) && !out.opusPT) out.opusPT = Number(m[1]);
    else if ((m = /^a=ssrc:(\d+) /.exec(line)) && !out.ssrc) out.ssrc = Number(m[1]);
    else if ((m = /^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host/i.exec(line)) && !out.ip) {
      out.ip = m[1];
      out.port = Number(m[2]);
    }
  }
  return out;
}

// offerFragment is the offer as Discord's web client cuts it down: the
// ICE credentials, the fingerprint, Opus and the sending SSRC.
export function offerFragment(o) {
  return [
    `a=ice-ufrag:${o.ufrag}`, `a=ice-pwd:${o.pwd}`, `a=fingerprint:sha-256 ${o.fingerprint}`,
    `a=rtpmap:${o.opusPT} opus/48000/2`, `a=ssrc:${o.ssrc} cname:chorus`, '',
  ].join('\n');
}

// remoteAnswer builds the full answer for the server's fragment: ICE-lite,
// DTLS passive, one bundled audio section with our mid and payload type.
export function remoteAnswer(f, mid, pt) {
  return [
    'v=0', `o=- 1 1 IN IP4 ${f.ip}`, 's=-', 't=0 0', 'a=ice-lite', `a=group:BUNDLE ${mid}`,
    `m=audio ${f.port} UDP/TLS/RTP/SAVPF ${pt}`, `c=IN IP4 ${f.ip}`, `a=rtcp:${f.port}`,
    `a=ice-ufrag:${f.ufrag}`, `a=ice-pwd:${f.pwd}`, `a=fingerprint:sha-256 ${f.fingerprint}`,
    'a=setup:passive', `a=mid:${mid}`, 'a=sendrecv', 'a=rtcp-mux',
    `a=rtpmap:${pt} opus/48000/2`, `a=fmtp:${pt} minptime=10;useinbandfec=1`,
    `a=candidate:1 1 UDP 4261412862 ${f.ip} ${f.port} typ host`, 'a=end-of-candidates', '',
  ].join('\r\n');
}

// VoiceConnection joins one voice server. Events: onState(text) for the
// user, onSpeaking(userId, on), onPeers(userIds Set), onClosed(code) when
// the server ended it or it never opened (code, opened; 4014: moved or
// disconnected, the main gateway says where to go next).
export class VoiceConnection {
  constructor({ endpoint, guildId, userId, sessionId, token, mic, audio, onState, onSpeaking, onPeers, onClosed }) {
    Object.assign(this, { endpoint, guildId, userId, sessionId, token, mic, audio, onState, onSpeaking, onPeers, onClosed });
    this.seqAck = -1;
    this.peers = new Set();
    this.speaking = false;
    this.closed = false;
  }

  open() {
    this.onState('Connecting to the voice server…');
    const ws = new WebSocket(`wss://${this.endpoint}/?v=8`);
    this.ws = ws;
    ws.onmessage = (e) => {
      if (typeof e.data === 'string') this.receive(JSON.parse(e.data)).catch((err) => this.fail(err));
    };
    ws.onerror = () => {
      if (!this.opened) this.onState(`Cannot reach the voice server at wss://${this.endpoint} — if it uses a development certificate, open https://${this.endpoint} once and accept it.`);
    };
    ws.onopen = () => { this.opened = true; };
    ws.onclose = (e) => {
      clearInterval(this.beat);
      if (this.closed) return;
      this.close();
      this.onClosed(e.code, this.opened);
    };
  }

  send(op, d) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ op, d }));
  }

  fail(err) {
    this.onState('Voice failed: ' + err.message);
    this.close();
    this.onClosed(0);
  }

  async receive(p) {
    if (typeof p.seq === 'number') this.seqAck = p.seq;
    const d = p.d;
    switch (p.op) {
      case 8: // Hello
        clearInterval(this.beat);
        this.beat = setInterval(() => this.send(3, { t: Date.now(), seq_ack: this.seqAck }), d.heartbeat_interval);
        this.send(0, { server_id: this.guildId, user_id: this.userId, session_id: this.sessionId, token: this.token });
        break;
      case 2: await this.negotiate(); break; // Ready
      case 4: // Session Description
        await this.pc.setRemoteDescription({ type: 'answer', sdp: remoteAnswer(parseSDP(d.sdp), this.local.mid, this.local.opusPT) });
        this.onState('Connected (WebRTC)');
        this.setSpeaking(!this.muted);
        break;
      case 5: this.onSpeaking(d.user_id, (d.speaking & 1) !== 0); break;
      case 11: for (const id of d.user_ids) this.peers.add(id); this.onPeers(this.peers); break;
      case 13: this.peers.delete(d.user_id); this.onSpeaking(d.user_id, false); this.onPeers(this.peers); break;
    }
  }

  async negotiate() {
    this.onState('Setting up audio…');
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    const track = this.mic.getAudioTracks()[0];
    pc.addTransceiver(track, { direction: 'sendrecv', streams: [this.mic] });
    pc.ontrack = (e) => {
      this.audio.srcObject = new MediaStream([e.track]);
      this.audio.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed') this.fail(new Error('the media connection failed'));
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this.local = parseSDP(offer.sdp);
    if (!this.local.opusPT) throw new Error('this browser offers no Opus');
    const frag = offerFragment(this.local);
    this.send(1, {
      protocol: 'webrtc', data: frag, sdp: frag,
      codecs: [{ name: 'opus', type: 'audio', priority: 1000, payload_type: this.local.opusPT }],
      rtc_connection_id: crypto.randomUUID(),
    });
  }

  // setSpeaking sends op 5 (a client announces itself before media) and
  // stops the microphone track's audio while muted.
  setSpeaking(on) {
    this.speaking = on;
    if (this.local) this.send(5, { speaking: on ? 1 : 0, delay: 0, ssrc: this.local.ssrc });
    this.onSpeaking(this.userId, on);
  }

  setMuted(muted) {
    this.muted = muted;
    for (const t of this.mic.getAudioTracks()) t.enabled = !muted;
    if (this.pc && this.pc.remoteDescription) this.setSpeaking(!muted);
  }

  close() {
    this.closed = true;
    clearInterval(this.beat);
    if (this.pc) this.pc.close();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}
