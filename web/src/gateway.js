// The main gateway (Gateway v10, JSON): identify once, then resume after
// any drop, so the client keeps its session and receives what it missed.

export const Intents = {
  GUILDS: 1, GUILD_MEMBERS: 2, GUILD_VOICE_STATES: 128, GUILD_PRESENCES: 256,
  GUILD_MESSAGES: 512, GUILD_MESSAGE_TYPING: 2048, MESSAGE_CONTENT: 32768,
};

// Close codes after which resuming or reconnecting cannot help.
const FATAL = new Set([4004, 4010, 4011, 4012, 4013, 4014]);

export class Gateway {
  // onDispatch(type, data); onStatus(kind, detail) with kind one of
  // 'connecting', 'ready', 'resumed', 'lost', 'fatal'.
  constructor({ token, intents, onDispatch, onStatus }) {
    Object.assign(this, { token, intents, onDispatch, onStatus });
    this.seq = null;
    this.sessionId = null;
    this.attempt = 0;
    this.closed = false;
  }

  url() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/?v=10&encoding=json';
  }

  connect() {
    this.onStatus(this.sessionId ? 'lost' : 'connecting');
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onmessage = (e) => this.receive(JSON.parse(e.data));
    ws.onclose = (e) => {
      clearInterval(this.beat);
      if (this.ws !== ws || this.closed) return;
      if (FATAL.has(e.code)) {
        this.closed = true;
        this.onStatus('fatal', { code: e.code, reason: e.reason });
        return;
      }
      this.retry();
    };
  }

  retry() {
    const delay = Math.min(10000, 250 * 2 ** this.attempt++) * (0.5 + Math.random() / 2);
    this.onStatus('lost', { inMs: Math.round(delay) });
    setTimeout(() => { if (!this.closed) this.connect(); }, delay);
  }

  send(op, d) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ op, d }));
  }

  receive(p) {
    if (p.s != null) this.seq = p.s;
    switch (p.op) {
      case 10: // Hello
        this.heartbeat(p.d.heartbeat_interval);
        if (this.sessionId) {
          this.send(6, { token: this.token, session_id: this.sessionId, seq: this.seq });
        } else {
          this.send(2, {
            token: this.token, intents: this.intents,
            properties: { os: navigator.platform || 'web', browser: 'chorus-web', device: 'chorus-web' },
            presence: { status: 'online', since: null, activities: [], afk: false },
          });
        }
        break;
      case 1: this.send(1, this.seq); break;
      case 11: this.acked = true; break;
      case 7: this.ws.close(4000, 'reconnect'); break; // the node asks us to resume elsewhere
      case 9: // Invalid Session: d says whether resuming may work
        if (!p.d) { this.sessionId = null; this.seq = null; }
        setTimeout(() => this.ws.close(4000, 'invalid session'), 1000 + Math.random() * 4000);
        break;
      case 0:
        if (p.t === 'READY') {
          this.sessionId = p.d.session_id;
          this.attempt = 0;
          this.onStatus('ready');
        } else if (p.t === 'RESUMED') {
          this.attempt = 0;
          this.onStatus('resumed');
        }
        this.onDispatch(p.t, p.d);
        break;
    }
  }

  heartbeat(interval) {
    clearInterval(this.beat);
    this.acked = true;
    this.beat = setInterval(() => {
      // No ACK since the last beat: the connection is dead without having
      // closed (a node gone away); drop it and resume.
      if (!this.acked) { this.ws.close(4000, 'no heartbeat ack'); return; }
      this.acked = false;
      this.send(1, this.seq);
    }, interval);
  }

  close() {
    this.closed = true;
    clearInterval(this.beat);
    if (this.ws) this.ws.close(1000);
  }
}
