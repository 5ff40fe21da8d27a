// The Chorus web client: chat and voice on one node's Gateway v10, REST
// v10 and voice gateway v8 — the same protocols as every other client.
import { api, APIError } from './api.js';
import { Gateway, Intents } from './gateway.js';
import { VoiceConnection } from './voice.js';
import { el, clear, when } from './dom.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'chorus.token';
const PAGE = 50;

const state = {
  token: null, call: null, gw: null, me: null,
  guilds: new Map(), // id → {id, name, channels: Map, members: Map, presences: Map, voice: Map}
  guildId: null, channelId: null,
  history: new Map(), // channel id → {messages: [], complete: bool, loading: bool}
  typing: new Map(), // user id → timeout
  voice: null, // {guildId, channelId, conn, muted, deaf, speaking: Set, pendingServer}
};

// ---- status banner -------------------------------------------------------

let statusTimer;
function status(text, ok) {
  const s = $('status');
  clearTimeout(statusTimer);
  s.textContent = text;
  s.className = ok ? 'ok' : '';
  s.hidden = !text;
  if (ok) statusTimer = setTimeout(() => { s.hidden = true; }, 3000);
}

// ---- sign in -------------------------------------------------------------

async function signIn(token) {
  $('login-error').textContent = '';
  try {
    state.me = await api(token)('GET', '/users/@me');
  } catch (err) {
    $('login-error').textContent = err instanceof APIError && err.status === 401 ? 'That token is not valid here.' : 'Sign-in failed: ' + err.message;
    return;
  }
  state.token = token;
  state.call = api(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  $('app').hidden = false;
  $('me').textContent = `Signed in as ${state.me.global_name || state.me.username}`;
  state.gw = new Gateway({
    token, intents: Object.values(Intents).reduce((a, b) => a | b, 0),
    onDispatch, onStatus: gatewayStatus,
  });
  state.gw.connect();
}

function gatewayStatus(kind, detail) {
  switch (kind) {
    case 'connecting': status('Connecting…'); break;
    case 'lost': status(detail && detail.inMs != null ? `Connection lost — reconnecting in ${(detail.inMs / 1000).toFixed(1)} s…` : 'Reconnecting…'); break;
    case 'resumed': status('Reconnected: resumed, nothing missed.', true); break;
    case 'ready': status(state.everReady ? 'Reconnected with a new session.' : '', true); state.everReady = true; break;
    case 'fatal': signOut(`Disconnected by the server (${detail.code}${detail.reason ? ': ' + detail.reason : ''}).`); break;
  }
}

function signOut(why) {
  leaveVoice();
  if (state.gw) state.gw.close();
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, { token: null, gw: null, me: null, guildId: null, channelId: null, everReady: false });
  state.guilds.clear();
  state.history.clear();
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = why || '';
  status('');
}

async function offerDemo() {
  const res = await fetch('/web/demo').catch(() => null);
  if (!res || !res.ok) return;
  const demo = await res.json();
  $('demo').hidden = false;
  for (const b of $('demo').querySelectorAll('button')) {
    const u = demo.users.find((x) => x.username === b.dataset.demo);
    b.hidden = !u;
    if (u) b.onclick = () => signIn(u.token);
  }
}

// ---- gateway events ------------------------------------------------------

function guildOf(id) { return state.guilds.get(id); }

function onDispatch(t, d) {
  switch (t) {
    case 'READY':
      state.me = d.user;
      break;
    case 'GUILD_CREATE': {
      const g = { id: d.id, name: d.name, channels: new Map(), members: new Map(), presences: new Map(), voice: new Map() };
      for (const c of d.channels || []) g.channels.set(c.id, c);
      for (const m of d.members || []) g.members.set(m.user.id, m);
      for (const p of d.presences || []) g.presences.set(p.user.id, p.status);
      for (const v of d.voice_states || []) if (v.channel_id) g.voice.set(v.user_id, v);
      state.guilds.set(g.id, g);
      if (!state.guildId) state.guildId = g.id;
      renderGuilds();
      if (state.guildId === g.id) selectGuild(g.id);
      break;
    }
    case 'GUILD_DELETE': state.guilds.delete(d.id); renderGuilds(); break;
    case 'CHANNEL_CREATE': case 'CHANNEL_UPDATE': {
      const g = guildOf(d.guild_id);
      if (g) { g.channels.set(d.id, d); if (g.id === state.guildId) renderChannels(); }
      break;
    }
    case 'CHANNEL_DELETE': {
      const g = guildOf(d.guild_id);
      if (g) { g.channels.delete(d.id); if (g.id === state.guildId) renderChannels(); }
      break;
    }
    case 'GUILD_MEMBER_ADD': case 'GUILD_MEMBER_UPDATE': {
      const g = guildOf(d.guild_id);
      if (g) { g.members.set(d.user.id, { ...g.members.get(d.user.id), ...d }); renderMembers(); }
      break;
    }
    case 'GUILD_MEMBER_REMOVE': {
      const g = guildOf(d.guild_id);
      if (g) { g.members.delete(d.user.id); renderMembers(); }
      break;
    }
    case 'PRESENCE_UPDATE': {
      const g = guildOf(d.guild_id);
      if (g) { g.presences.set(d.user.id, d.status); renderMembers(); }
      break;
    }
    case 'MESSAGE_CREATE': {
      const h = state.history.get(d.channel_id);
      if (h && !h.messages.some((m) => m.id === d.id)) h.messages.push(d);
      stopTyping(d.author.id);
      if (d.channel_id === state.channelId) renderMessages(true);
      break;
    }
    case 'MESSAGE_UPDATE': {
      const h = state.history.get(d.channel_id);
      const i = h ? h.messages.findIndex((m) => m.id === d.id) : -1;
      if (i >= 0) { h.messages[i] = { ...h.messages[i], ...d }; if (d.channel_id === state.channelId) renderMessages(false); }
      break;
    }
    case 'MESSAGE_DELETE': {
      const h = state.history.get(d.channel_id);
      if (h) { h.messages = h.messages.filter((m) => m.id !== d.id); if (d.channel_id === state.channelId) renderMessages(false); }
      break;
    }
    case 'TYPING_START':
      if (d.channel_id === state.channelId && d.user_id !== state.me.id) startTyping(d.user_id);
      break;
    case 'VOICE_STATE_UPDATE': onVoiceState(d); break;
    case 'VOICE_SERVER_UPDATE': onVoiceServer(d); break;
  }
}

// ---- guilds, channels, members -------------------------------------------

function renderGuilds() {
  const sel = $('guild');
  clear(sel);
  for (const g of state.guilds.values()) sel.append(el('option', { value: g.id, selected: g.id === state.guildId }, g.name));
}

function selectGuild(id) {
  state.guildId = id;
  const g = guildOf(id);
  const text = [...g.channels.values()].filter((c) => c.type === 0).sort(byPosition);
  if (!g.channels.has(state.channelId) && text.length) selectChannel(text[0].id);
  renderChannels();
  renderMembers();
}

const byPosition = (a, b) => (a.position || 0) - (b.position || 0) || a.name.localeCompare(b.name);

function displayName(g, userId) {
  const m = g && g.members.get(userId);
  return (m && (m.nick || m.user.global_name || m.user.username)) || userId;
}

function renderChannels() {
  const g = guildOf(state.guildId);
  if (!g) return;
  const texts = $('text-channels'), voices = $('voice-channels');
  clear(texts);
  clear(voices);
  for (const c of [...g.channels.values()].sort(byPosition)) {
    if (c.type === 0) {
      texts.append(el('li', {}, el('button', { type: 'button', 'aria-current': String(c.id === state.channelId), onclick: () => selectChannel(c.id) }, '# ' + c.name)));
    } else if (c.type === 2) {
      const inVoice = state.voice && state.voice.channelId === c.id;
      const people = el('ul', { class: 'voice-people', 'aria-label': `In ${c.name}` });
      for (const v of g.voice.values()) {
        if (v.channel_id !== c.id) continue;
        const speaking = state.voice && state.voice.speaking.has(v.user_id);
        const flags = [v.self_mute || v.mute ? 'muted' : '', v.self_deaf || v.deaf ? 'deafened' : ''].filter(Boolean).join(', ');
        people.append(el('li', { class: speaking ? 'speaking' : '', 'data-user': v.user_id }, displayName(g, v.user_id) + (flags ? ` (${flags})` : '')));
      }
      voices.append(el('li', {},
        el('button', { type: 'button', 'aria-current': String(inVoice), onclick: () => joinVoice(c.id), 'aria-label': `Join voice channel ${c.name}` }, c.name),
        people));
    }
  }
}

function renderMembers() {
  const g = guildOf(state.guildId);
  const list = $('member-list');
  clear(list);
  if (!g) return;
  const rank = { online: 0, idle: 1, dnd: 2 };
  const members = [...g.members.values()].sort((a, b) =>
    (rank[g.presences.get(a.user.id)] ?? 3) - (rank[g.presences.get(b.user.id)] ?? 3) || displayName(g, a.user.id).localeCompare(displayName(g, b.user.id)));
  for (const m of members) {
    const st = g.presences.get(m.user.id) || 'offline';
    list.append(el('li', {}, el('span', { class: 'presence ' + st, role: 'img', 'aria-label': st }), displayName(g, m.user.id) + (m.user.bot ? ' (bot)' : '')));
  }
}

// ---- messages ------------------------------------------------------------

async function selectChannel(id) {
  state.channelId = id;
  const g = guildOf(state.guildId);
  const c = g && g.channels.get(id);
  $('channel-name').textContent = c ? '# ' + c.name : '';
  $('input').placeholder = c ? `Message #${c.name}` : 'Message';
  closePanels();
  for (const uid of state.typing.keys()) stopTyping(uid);
  renderChannels();
  if (!state.history.has(id)) {
    state.history.set(id, { messages: [], complete: false, loading: false });
    await loadOlder();
  }
  renderMessages(true);
}

async function loadOlder() {
  const id = state.channelId;
  const h = state.history.get(id);
  if (!h || h.loading || h.complete) return;
  h.loading = true;
  $('history-state').textContent = 'Loading older messages…';
  const sc = $('scroller');
  const fromBottom = sc.scrollHeight - sc.scrollTop;
  try {
    const before = h.messages.length ? `&before=${h.messages[0].id}` : '';
    const page = await state.call('GET', `/channels/${id}/messages?limit=${PAGE}${before}`);
    page.reverse(); // newest first on the wire
    h.messages = page.concat(h.messages.filter((m) => !page.some((p) => p.id === m.id)));
    h.complete = page.length < PAGE;
  } catch (err) {
    $('history-state').textContent = 'Could not load history: ' + err.message;
    h.loading = false;
    return;
  }
  h.loading = false;
  if (id !== state.channelId) return;
  renderMessages(false);
  sc.scrollTop = sc.scrollHeight - fromBottom; // keep the reader where they were
}

function renderMessages(toBottom) {
  const h = state.history.get(state.channelId);
  const list = $('messages');
  const sc = $('scroller');
  const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < 40;
  clear(list);
  if (!h) return;
  $('history-state').textContent = h.complete ? 'This is the start of the channel.' : (h.loading ? 'Loading older messages…' : '');
  const g = guildOf(state.guildId);
  for (const m of h.messages) list.append(messageItem(g, m));
  if (toBottom || atBottom) sc.scrollTop = sc.scrollHeight;
}

function messageItem(g, m) {
  const mine = state.me && m.author.id === state.me.id;
  const when = new Date(m.timestamp);
  const li = el('li', { 'data-id': m.id },
    el('span', { class: 'author' }, displayName(g, m.author.id) || m.author.username),
    el('time', { datetime: m.timestamp }, when.toLocaleTimeString()),
    m.edited_timestamp ? el('span', { class: 'edited' }, '(edited)') : null,
    el('span', { class: 'content' }, m.content));
  if (mine) {
    li.append(el('span', { class: 'actions' },
      el('button', { type: 'button', 'aria-label': 'Edit message', onclick: () => editMessage(li, m) }, 'Edit'),
      el('button', { type: 'button', 'aria-label': 'Delete message', onclick: () => deleteMessage(m) }, 'Delete')));
  }
  return li;
}

function editMessage(li, m) {
  const box = el('textarea', { 'aria-label': 'Edit message' }, m.content);
  const save = async () => {
    const content = box.value.trim();
    if (content && content !== m.content) {
      try { await state.call('PATCH', `/channels/${m.channel_id}/messages/${m.id}`, { content }); } catch (err) { status('Edit failed: ' + err.message); }
    }
    renderMessages(false);
  };
  box.onkeydown = (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); save(); }
    if (e.key === 'Escape') renderMessages(false);
  };
  li.querySelector('.content').replaceWith(box);
  box.focus();
}

async function deleteMessage(m) {
  if (!confirm('Delete this message?')) return;
  try { await state.call('DELETE', `/channels/${m.channel_id}/messages/${m.id}`); } catch (err) { status('Delete failed: ' + err.message); }
}

let lastTypingSent = 0;
async function send(e) {
  e.preventDefault();
  const input = $('input');
  const content = input.value.trim();
  if (!content || !state.channelId) return;
  input.value = '';
  lastTypingSent = 0;
  try {
    // A nonce makes a retried send idempotent (enforce_nonce).
    await state.call('POST', `/channels/${state.channelId}/messages`, { content, nonce: String(Date.now()) + Math.floor(Math.random() * 1000), enforce_nonce: true });
  } catch (err) {
    input.value = content;
    status('Not sent: ' + err.message);
  }
}

function typed() {
  const now = Date.now();
  if (!state.channelId || now - lastTypingSent < 8000 || !$('input').value) return;
  lastTypingSent = now;
  state.call('POST', `/channels/${state.channelId}/typing`).catch(() => {});
}

function startTyping(userId) {
  clearTimeout(state.typing.get(userId));
  state.typing.set(userId, setTimeout(() => stopTyping(userId), 10000));
  renderTyping();
}

function stopTyping(userId) {
  clearTimeout(state.typing.get(userId));
  if (state.typing.delete(userId)) renderTyping();
}

function renderTyping() {
  const g = guildOf(state.guildId);
  const names = [...state.typing.keys()].map((id) => displayName(g, id));
  $('typing').textContent = names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.join(', ')} are typing…`;
}

// ---- voice ---------------------------------------------------------------

async function joinVoice(channelId) {
  if (state.voice && state.voice.channelId === channelId) return;
  leaveVoice();
  let mic;
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true }, video: false });
  } catch (err) {
    status('No microphone: ' + err.message);
    return;
  }
  state.voice = { guildId: state.guildId, channelId, mic, conn: null, muted: false, deaf: false, speaking: new Set(), session: null, server: null };
  $('voice-panel').hidden = false;
  const c = guildOf(state.guildId).channels.get(channelId);
  $('voice-name').textContent = 'Voice: ' + (c ? c.name : '');
  voiceState('Joining…');
  sendVoiceState();
  renderVoiceButtons();
  renderChannels();
}

function sendVoiceState() {
  const v = state.voice;
  state.gw.send(4, { guild_id: v.guildId, channel_id: v.channelId, self_mute: v.muted, self_deaf: v.deaf });
}

function voiceState(text) { $('voice-state').textContent = text; }

function onVoiceState(d) {
  const g = guildOf(d.guild_id);
  if (g) {
    if (d.channel_id) g.voice.set(d.user_id, d); else g.voice.delete(d.user_id);
    if (g.id === state.guildId) renderChannels();
  }
  const v = state.voice;
  if (v && state.me && d.user_id === state.me.id && d.guild_id === v.guildId) {
    if (!d.channel_id) { leaveVoice(true); return; }
    v.session = d.session_id;
    maybeConnectVoice();
  }
}

function onVoiceServer(d) {
  const v = state.voice;
  if (!v || d.guild_id !== v.guildId) return;
  // A second VOICE_SERVER_UPDATE moves us to another voice node (a node
  // failed or drained): connect there, as Discord's clients do.
  v.server = d;
  if (v.conn) { v.conn.close(); v.conn = null; voiceState('Moving to another voice server…'); }
  maybeConnectVoice();
}

function maybeConnectVoice() {
  const v = state.voice;
  if (!v || v.conn || !v.session || !v.server || !v.server.endpoint) return;
  const conn = new VoiceConnection({
    endpoint: v.server.endpoint, guildId: v.guildId, userId: state.me.id, sessionId: v.session, token: v.server.token,
    mic: v.mic, audio: $('remote-audio'),
    onState: voiceState,
    onSpeaking: (userId, on) => { if (on) v.speaking.add(userId); else v.speaking.delete(userId); renderChannels(); },
    onPeers: () => renderChannels(),
    onClosed: (code, opened) => {
      if (state.voice !== v || v.conn !== conn) return;
      v.conn = null;
      if (!opened) return; // the state already says why it could not connect
      voiceState(code === 4014 ? 'Disconnected by the voice server; waiting to be moved…' : `Voice connection closed (${code}).`);
    },
  });
  v.conn = conn;
  conn.setMuted(v.muted);
  conn.open();
}

function leaveVoice(serverSide) {
  const v = state.voice;
  if (!v) return;
  state.voice = null;
  if (v.conn) v.conn.close();
  for (const t of v.mic.getTracks()) t.stop();
  if (!serverSide && state.gw) state.gw.send(4, { guild_id: v.guildId, channel_id: null, self_mute: false, self_deaf: false });
  $('remote-audio').srcObject = null;
  $('voice-panel').hidden = true;
  renderChannels();
}

function renderVoiceButtons() {
  const v = state.voice;
  if (!v) return;
  $('mute').setAttribute('aria-pressed', String(v.muted));
  $('mute').textContent = v.muted ? 'Unmute' : 'Mute';
  $('deafen').setAttribute('aria-pressed', String(v.deaf));
  $('deafen').textContent = v.deaf ? 'Undeafen' : 'Deafen';
}

function toggleMute() {
  const v = state.voice;
  if (!v) return;
  v.muted = !v.muted;
  if (!v.muted && v.deaf) v.deaf = false; // unmuting undeafens, as in Discord
  applyVoiceFlags();
}

function toggleDeaf() {
  const v = state.voice;
  if (!v) return;
  v.deaf = !v.deaf;
  v.muted = v.deaf || v.muted;
  applyVoiceFlags();
}

function applyVoiceFlags() {
  const v = state.voice;
  $('remote-audio').muted = v.deaf;
  if (v.conn) v.conn.setMuted(v.muted);
  sendVoiceState();
  renderVoiceButtons();
}

// ---- panels on small screens ---------------------------------------------

function togglePanel(id, button) {
  const open = !$(id).classList.contains('open');
  closePanels();
  $(id).classList.toggle('open', open);
  $(button).setAttribute('aria-expanded', String(open));
}

function closePanels() {
  for (const [id, b] of [['sidebar', 'menu'], ['members', 'members-toggle']]) {
    $(id).classList.remove('open');
    $(b).setAttribute('aria-expanded', 'false');
  }
}

// ---- wiring --------------------------------------------------------------

when('login-form', 'submit', (e) => { e.preventDefault(); signIn($('token').value.trim()); });
when('guild', 'change', (e) => selectGuild(e.target.value));
when('composer', 'submit', send);
when('input', 'input', typed);
when('input', 'keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('composer').requestSubmit(); } });
when('scroller', 'scroll', () => { if ($('scroller').scrollTop < 80) loadOlder(); });
when('mute', 'click', toggleMute);
when('deafen', 'click', toggleDeaf);
when('leave', 'click', () => leaveVoice());
when('signout', 'click', () => signOut());
when('menu', 'click', () => togglePanel('sidebar', 'menu'));
when('members-toggle', 'click', () => togglePanel('members', 'members-toggle'));
for (const b of document.querySelectorAll('.close')) b.addEventListener('click', closePanels);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closePanels(); });

// For tests and the curious: the client's state, read-only by convention.
window.chorus = { state, voice: () => state.voice && state.voice.conn };

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved); else offerDemo();
