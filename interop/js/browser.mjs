// The web client in a real browser (Debian's Chromium driven by
// playwright-core), next to discord.js; the Go test (browser_test.go)
// runs disgo beside it. Stdout: progress lines, then one JSON result line.
// Stdin: the Go test's word that disgo received the browser's audio, with
// the path of the frames it received, which are decoded here (Opus →
// PCM) to check that they carry the browser's microphone (a 440 Hz tone).
import { chromium } from 'playwright-core';
import { Client, GatewayIntentBits, Events } from 'discord.js';
import OpusScript from 'opusscript';
import readline from 'node:readline';
import path from 'node:path';
import { env, within, frames } from './common.mjs';

const base = `https://${env('CHORUS_HTTPS')}/`;
const artifacts = env('CHORUS_ARTIFACTS');
const general = env('CHORUS_GENERAL');
const nonce = Date.now().toString(36);
const step = (s) => console.log('step: ' + s);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const bot = new Client({
  intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.MessageContent, GatewayIntentBits.GuildVoiceStates],
  rest: { api: `http://${env('CHORUS_HTTP')}/api` },
});
const botReady = new Promise((res) => bot.once(Events.ClientReady, res));
await bot.login(env('CHORUS_BOT_TOKEN'));
await within(botReady, 30000, 'discord.js ready');
step('discord.js ready');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${env('CHORUS_WAV')}`, '--autoplay-policy=no-user-gesture-required'],
});
const result = { ok: false };
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 720 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('dialog', (d) => d.accept()); // "Delete this message?"

  // The gateway connection runs through a switch the test can open: a
  // network drop the client must recover from by itself.
  let offline = false;
  const live = new Set();
  await page.routeWebSocket((u) => u.pathname === '/' && u.searchParams.get('v') === '10', (ws) => {
    if (offline) { ws.close({ code: 4000, reason: 'test: offline' }); return; }
    ws.connectToServer();
    live.add(ws);
  });

  // Sign in with the demo's one click; the newest history is on screen.
  await page.goto(base);
  await page.getByRole('button', { name: 'Sign in as alice' }).click();
  await page.locator('#messages li', { hasText: 'history 59' }).waitFor({ timeout: 20000 });
  step('signed in, newest history shown');

  // Infinite scroll: scrolling up loads older pages until the start.
  for (let i = 0; i < 10 && !(await page.locator('#messages li', { hasText: 'history 00' }).count()); i++) {
    await page.locator('#scroller').evaluate((s) => { s.scrollTop = 0; s.dispatchEvent(new Event('scroll')); });
    await page.waitForFunction(() => !window.chorus.state.history.get(window.chorus.state.channelId).loading);
  }
  await page.locator('#messages li', { hasText: 'history 00' }).waitFor({ timeout: 5000 });
  await page.getByText('This is the start of the channel.').waitFor();
  result.history = await page.locator('#messages li').count();
  step(`history scrolled to the start: ${result.history} messages`);

  // Presence: the bot (online through discord.js) is shown online.
  await page.locator('#member-list li', { hasText: 'Chorus Bot' }).locator('.presence.online').waitFor({ timeout: 10000 });

  // The browser sends (Enter, from the keyboard); discord.js (and disgo,
  // in the Go test) receive.
  const channel = await bot.channels.fetch(general);
  const fromBrowser = `from the browser ${nonce}`;
  const seen = new Promise((res) => bot.on(Events.MessageCreate, (m) => { if (m.content === fromBrowser) res(m); }));
  await page.getByLabel('Message', { exact: true }).fill(fromBrowser);
  await page.getByLabel('Message', { exact: true }).press('Enter');
  const m = await within(seen, 15000, 'discord.js receiving the browser message');
  result.browserAuthor = m.author.username;
  console.log('sent: ' + fromBrowser);

  // Typing: discord.js types, the browser says so; its message ends it.
  await channel.sendTyping();
  await page.locator('#typing', { hasText: 'Chorus Bot is typing' }).waitFor({ timeout: 10000 });
  const fromBot = `from discord.js ${nonce}`;
  await channel.send(fromBot);
  await page.locator('#messages li', { hasText: fromBot }).waitFor({ timeout: 15000 });
  await page.locator('#typing', { hasText: 'typing' }).waitFor({ state: 'detached', timeout: 5000 }).catch(() => {});
  if (await page.locator('#typing').textContent()) throw new Error('typing still shown after the message');
  step('typing and a live message from discord.js shown');

  // Edit and delete its own message; discord.js sees both.
  const edited = `edited in the browser ${nonce}`;
  const updated = new Promise((res) => bot.on(Events.MessageUpdate, (_, n) => { if (n.id === m.id) res(n); }));
  const mine = page.locator('#messages li', { hasText: fromBrowser });
  await mine.getByRole('button', { name: 'Edit message' }).click();
  await page.getByRole('textbox', { name: 'Edit message' }).fill(edited);
  await page.getByRole('textbox', { name: 'Edit message' }).press('Enter');
  if ((await within(updated, 15000, 'discord.js seeing the edit')).content !== edited) throw new Error('the edit reached discord.js changed');
  await page.locator('#messages li', { hasText: edited }).getByText('(edited)').waitFor({ timeout: 5000 });
  await page.screenshot({ path: path.join(artifacts, 'web-chat.png') });
  const deleted = new Promise((res) => bot.on(Events.MessageDelete, (d) => { if (d.id === m.id) res(); }));
  await page.locator('#messages li', { hasText: edited }).getByRole('button', { name: 'Delete message' }).click();
  await within(deleted, 15000, 'discord.js seeing the delete');
  await page.locator('#messages li', { hasText: edited }).waitFor({ state: 'detached', timeout: 5000 });
  step('edited and deleted, discord.js saw both');

  // The network drops; a message is sent meanwhile; the client comes
  // back by itself, resumes, says so, and shows what it missed.
  offline = true;
  for (const ws of live) ws.close({ code: 4000, reason: 'test: network drop' });
  live.clear();
  await page.locator('#status', { hasText: 'reconnecting' }).waitFor({ timeout: 10000 });
  const missed = `while the browser was away ${nonce}`;
  await channel.send(missed);
  offline = false;
  await page.locator('#status', { hasText: 'Reconnected: resumed' }).waitFor({ timeout: 20000 });
  await page.locator('#messages li', { hasText: missed }).waitFor({ timeout: 5000 });
  step('resumed after a network drop, the missed message shown');

  // Voice: join the Lounge, where disgo is speaking.
  await page.getByRole('button', { name: 'Join voice channel Lounge' }).click();
  await page.locator('#voice-state', { hasText: 'Connected (WebRTC)' }).waitFor({ timeout: 20000 });
  step('voice connected');
  const inbound = () => page.evaluate(async () => {
    const pc = window.chorus.voice().pc;
    let s = null;
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') s = r; });
    return s && { packetsReceived: s.packetsReceived, totalAudioEnergy: s.totalAudioEnergy, audioLevel: s.audioLevel, ssrc: s.ssrc };
  });
  let stats = null;
  for (let i = 0; i < 200; i++) {
    stats = await inbound();
    if (stats && stats.packetsReceived >= 100 && stats.totalAudioEnergy > 0) break;
    await page.waitForTimeout(100);
  }
  result.inbound = stats;
  if (!stats || stats.packetsReceived < 100 || !(stats.totalAudioEnergy > 0)) throw new Error('no audio from disgo arriving: ' + JSON.stringify(stats));
  await page.locator('#voice-channels li.speaking', { hasText: 'Chorus Bot' }).waitFor({ timeout: 10000 });
  step('audio from disgo arriving, the bot shown speaking');
  await page.screenshot({ path: path.join(artifacts, 'web-voice.png') });

  // Wait for the Go test: disgo has the browser's audio.
  const word = await within(lines.next(), 60000, 'the Go test saying disgo received the browser audio');
  const [what, file] = (word.value || '').split(' ');
  if (what !== 'frames') throw new Error('unexpected word from the test: ' + word.value);
  result.tone = tone(frames(file));

  // Mute and deafen reach the others as voice states.
  const me = env('CHORUS_ALICE_ID');
  const voiceState = (pred) => new Promise((res) => bot.on(Events.VoiceStateUpdate, (_, n) => { if (n.id === me && pred(n)) res(n); }));
  let vs = voiceState((n) => n.selfMute && !n.selfDeaf);
  await page.getByRole('button', { name: 'Mute' }).click();
  await within(vs, 10000, 'discord.js seeing alice muted');
  await page.locator('#voice-channels li[data-user]', { hasText: 'Alice (muted)' }).waitFor({ timeout: 5000 });
  vs = voiceState((n) => n.selfMute && n.selfDeaf);
  await page.getByRole('button', { name: 'Deafen' }).click();
  await within(vs, 10000, 'discord.js seeing alice deafened');
  if (!(await page.locator('#remote-audio').evaluate((a) => a.muted))) throw new Error('deafened but the call is still audible');
  vs = voiceState((n) => !n.selfMute && !n.selfDeaf);
  await page.getByRole('button', { name: 'Unmute' }).click();
  await within(vs, 10000, 'discord.js seeing alice unmuted');
  step('mute and deafen seen by discord.js');

  const left = voiceState((n) => !n.channelId);
  await page.getByRole('button', { name: 'Leave' }).click();
  await page.locator('#voice-panel').waitFor({ state: 'hidden' });
  await within(left, 10000, 'discord.js seeing alice leave');

  // A phone-sized screen: bob signs in; the channel list opens over the
  // chat and closes when a channel is chosen.
  const phone = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  small.on('pageerror', (e) => errors.push(e.message));
  await small.goto(base);
  await small.getByRole('button', { name: 'Sign in as bob' }).click();
  await small.locator('#messages li', { hasText: missed }).waitFor({ timeout: 20000 });
  if (await small.locator('#sidebar').isVisible()) throw new Error('the channel list covers the chat on a phone');
  await small.getByRole('button', { name: 'Channels' }).click();
  await small.getByRole('button', { name: '# random' }).click();
  await small.locator('#channel-name', { hasText: '# random' }).waitFor();
  if (await small.locator('#sidebar').isVisible()) throw new Error('the channel list stayed open after choosing a channel');
  await small.screenshot({ path: path.join(artifacts, 'web-phone-chat.png') });
  await small.getByRole('button', { name: 'Members' }).click();
  await small.locator('#member-list li', { hasText: 'Alice' }).waitFor();
  await small.getByRole('button', { name: 'Close the member list' }).click();
  await small.getByRole('button', { name: 'Channels' }).click();
  await small.screenshot({ path: path.join(artifacts, 'web-phone-channels.png') });
  await small.getByRole('button', { name: 'Close the channel list' }).click();
  if (await small.locator('#sidebar').isVisible()) throw new Error('the channel list did not close');
  step('phone-sized screen works');
  result.pageErrors = errors;
  result.ok = errors.length === 0;
} catch (err) {
  result.error = String(err && err.stack || err);
} finally {
  await browser.close();
  bot.destroy();
}
console.log(JSON.stringify(result));
process.exit(0);

// tone decodes the frames and measures them: the RMS level and the
// frequency of the loudest stretch, from its zero crossings.
function tone(fs) {
  const dec = new OpusScript(48000, 1, OpusScript.Application.VOIP);
  let sum = 0, n = 0, crossings = 0, prev = 0, voiced = 0;
  for (const f of fs) {
    const pcm = dec.decode(Buffer.from(f));
    const s = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
    let e = 0;
    for (const x of s) e += x * x;
    const rms = Math.sqrt(e / s.length);
    sum += e; n += s.length;
    if (rms < 300) continue; // only what is clearly sound counts for pitch
    voiced += s.length;
    for (const x of s) {
      if ((prev < 0 && x >= 0) || (prev >= 0 && x < 0)) crossings++;
      prev = x;
    }
  }
  dec.delete();
  return { frames: fs.length, rms: Math.round(Math.sqrt(sum / Math.max(n, 1))), hz: voiced ? Math.round(crossings / 2 / (voiced / 48000)) : 0, voicedSeconds: voiced / 48000 };
}
