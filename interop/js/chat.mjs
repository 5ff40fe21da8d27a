// Acceptance test of discord.js 14 against a running Chorus. The Go harness
// (discordjs_test.go) starts chorus and passes its addresses and demo data in
// the environment. The script exits 0 only if every check passed.
//
// Checks: both clients become ready with the demo guild and its channels
// cached; messages flow bot -> alice and alice -> bot with author, content
// and nonce; enforce_nonce returns the same message twice; alice's gateway
// connection is cut (by the TCP proxy below) and she resumes and receives
// exactly the messages she missed.
import net from 'node:net';
import { Client, Events, GatewayIntentBits } from 'discord.js';
import { env, within } from './common.mjs';

const HTTP = env('CHORUS_HTTP');
const [host, port] = HTTP.split(':');
const PROXY_PORT = Number(env('CHORUS_PROXY_PORT'));
const GUILD = env('CHORUS_GUILD');
const GENERAL = env('CHORUS_GENERAL');
const BOT_ID = env('CHORUS_BOT_ID');
const ALICE_ID = env('CHORUS_ALICE_ID');

// A TCP proxy in front of the gateway, so the test can cut connections the
// way a network does (no close frame).
const sockets = new Set();
const proxy = net.createServer((client) => {
  const upstream = net.connect(Number(port), host);
  sockets.add(client); sockets.add(upstream);
  client.pipe(upstream); upstream.pipe(client);
  const drop = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
  client.on('error', drop); upstream.on('error', drop); client.on('close', drop); upstream.on('close', drop);
});
await new Promise((res) => proxy.listen(PROXY_PORT, '127.0.0.1', res));

const t0 = Date.now();
const step = (what) => { if (process.env.CHORUS_DEBUG) console.error(`${Date.now() - t0} ms: ${what}`); };

function makeClient() {
  const c = new Client({
    intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.MessageContent, GatewayIntentBits.GuildMembers],
    rest: { api: `http://${HTTP}/api` },
  });
  c.received = [];
  c.waiters = [];
  c.on(Events.MessageCreate, (m) => {
    c.received.push(m);
    c.waiters = c.waiters.filter((w) => !w(m));
  });
  return c;
}

function nextMessage(c, content) {
  const found = c.received.find((m) => m.content === content);
  if (found) return Promise.resolve(found);
  return within(new Promise((res) => c.waiters.push((m) => (m.content === content ? (res(m), true) : false))), 15000, `message ${content}`);
}

const bot = makeClient();
const alice = makeClient();
const results = {};
try {
  await within(Promise.all([
    new Promise((res) => bot.once(Events.ClientReady, res)),
    bot.login(env('CHORUS_BOT_TOKEN')),
  ]), 30000, 'bot ready');
  await within(Promise.all([
    new Promise((res) => alice.once(Events.ClientReady, res)),
    alice.login(env('CHORUS_ALICE_TOKEN')),
  ]), 30000, 'alice ready');

  const guild = bot.guilds.cache.get(GUILD);
  if (!guild || guild.name !== 'Chorus Demo') throw new Error('demo guild not cached');
  if (!guild.channels.cache.get(GENERAL)) throw new Error('#general not cached');
  if (!guild.members.cache.get(BOT_ID)) throw new Error('bot member not cached');
  if (bot.user.id !== BOT_ID) throw new Error(`bot user ${bot.user.id}`);
  results.ready = true;
  step('results.ready = true;');

  // Bot -> alice.
  const botGeneral = await bot.channels.fetch(GENERAL);
  const sent = await botGeneral.send({ content: 'hello from discord.js bot', nonce: 'djs-nonce-1' });
  const got = await nextMessage(alice, 'hello from discord.js bot');
  if (got.id !== sent.id || got.author.id !== BOT_ID || got.nonce !== 'djs-nonce-1') {
    throw new Error(`alice got ${got.id} ${got.author.id} ${got.nonce}`);
  }
  // Alice -> bot.
  const aliceGeneral = await alice.channels.fetch(GENERAL);
  await aliceGeneral.send({ content: 'hello from alice (discord.js)', nonce: 'djs-nonce-2' });
  const got2 = await nextMessage(bot, 'hello from alice (discord.js)');
  if (got2.author.id !== ALICE_ID || got2.nonce !== 'djs-nonce-2') throw new Error('bot got wrong message');
  results.messages = true;
  step('results.messages = true;');

  // enforce_nonce.
  const a = await botGeneral.send({ content: 'once only', nonce: 'djs-enforce', enforceNonce: true });
  const b = await botGeneral.send({ content: 'once only', nonce: 'djs-enforce', enforceNonce: true });
  if (a.id !== b.id) throw new Error(`enforce_nonce gave ${a.id} and ${b.id}`);
  // The REST reply can come before alice's MESSAGE_CREATE: wait for it, so
  // it is not taken for a replayed event below. A second dispatch of the
  // repeat would still show up there and fail the check.
  await nextMessage(alice, 'once only');
  results.enforceNonce = true;
  step('results.enforceNonce = true;');

  // Cut alice's connection, send while she is away, expect a resume that
  // replays exactly the missed messages.
  const resumed = within(new Promise((res) => alice.once(Events.ShardResume, (_id, replayed) => res(replayed))), 30000, 'resume');
  alice.received = [];
  for (const s of sockets) s.destroy();
  for (let i = 0; i < 5; i++) await botGeneral.send({ content: `missed ${i}` });
  const replayed = await resumed;
  step('const replayed = await resumed;');
  await botGeneral.send({ content: 'after resume' });
  await nextMessage(alice, 'after resume');
  const contents = alice.received.map((m) => m.content);
  const want = ['missed 0', 'missed 1', 'missed 2', 'missed 3', 'missed 4', 'after resume'];
  if (JSON.stringify(contents) !== JSON.stringify(want)) {
    throw new Error(`after resume got ${JSON.stringify(contents)}`);
  }
  results.resume = { replayed };
  step('results.resume = { replayed };');
  console.log(JSON.stringify({ ok: true, results }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack || err), results }));
  process.exitCode = 1;
} finally {
  step('destroying');
  await bot.destroy();
  step('bot destroyed');
  await alice.destroy();
  step('alice destroyed');
  proxy.close();
  for (const s of sockets) s.destroy();
  // discord.js keeps REST keep-alive sockets and timers for about 30 s;
  // the verdict is in, so do not wait for them.
  process.exit();
}
