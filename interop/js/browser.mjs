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
  intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.MessageContent],
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

  // The browser sends; discord.js (and disgo, in the Go test) receive.
  const fromBrowser = `from the browser ${nonce}`;
  const seen = new Promise((res) => bot.on(Events.MessageCreate, (m) => { if (m.content === fromBrowser) res(m); }));
  await page.getByLabel('Message', { exact: true }).fill(fromBrowser);
  await page.getByRole('button', { name: 'Send' }).click();
  const m = await within(seen, 15000, 'discord.js receiving the browser message');
  result.browserAuthor = m.author.username;
  console.log('sent: ' + fromBrowser);

  // discord.js sends; the browser shows it live.
  const fromBot = `from discord.js ${nonce}`;
  await (await bot.channels.fetch(general)).send(fromBot);
  await page.locator('#messages li', { hasText: fromBot }).waitFor({ timeout: 15000 });
  step('live message from discord.js shown');
  await page.screenshot({ path: path.join(artifacts, 'web-chat.png') });

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

  await page.getByRole('button', { name: 'Leave' }).click();
  await page.locator('#voice-panel').waitFor({ state: 'hidden' });
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
