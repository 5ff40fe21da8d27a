// Voice-node failover with an unmodified @discordjs/voice client, driven
// by disgo_cluster_test.go (TestDiscordJSVoiceNodeKilled): the bot joins
// the demo voice channel through a Chorus cluster and plays Opus frames in
// a loop until it is told to stop (stdin closes) or 90 s pass. The test
// kills the voice node in between and listens for the bot on the room's
// new node. Prints one JSON line per connection state change and a last
// {"ok": ...} line.
import { Readable } from 'node:stream';
import { Client, Events, GatewayIntentBits } from 'discord.js';
import {
  joinVoiceChannel, entersState, VoiceConnectionStatus, createAudioPlayer, createAudioResource, StreamType,
} from '@discordjs/voice';
import { env, within, frames } from './common.mjs';

const HTTP = env('CHORUS_HTTP');
const GUILD = env('CHORUS_GUILD');
const LOUNGE = env('CHORUS_LOUNGE');

function* forever(packets) {
  for (let i = 0; ; i++) yield packets[i % packets.length];
}

const c = new Client({ intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildVoiceStates], rest: { api: `http://${HTTP}/api` } });
let ok = false;
try {
  await within(Promise.all([new Promise((res) => c.once(Events.ClientReady, res)), c.login(env('CHORUS_BOT_TOKEN'))]), 30000, 'login');
  const guild = c.guilds.cache.get(GUILD);
  const conn = joinVoiceChannel({ channelId: LOUNGE, guildId: GUILD, adapterCreator: guild.voiceAdapterCreator, selfDeaf: false, selfMute: false });
  conn.on('stateChange', (o, n) => console.log(JSON.stringify({ state: n.status, from: o.status, at: Date.now() })));
  // As every application must: a connection's errors (here, reaching the
  // killed node) are events, and an unheard 'error' ends the process.
  conn.on('error', (err) => console.log(JSON.stringify({ error: String(err), at: Date.now() })));
  await entersState(conn, VoiceConnectionStatus.Ready, 20000);
  const player = createAudioPlayer();
  conn.subscribe(player);
  player.play(createAudioResource(Readable.from(forever(frames('../loadtest/opus/a.frames'))), { inputType: StreamType.Opus }));
  console.log(JSON.stringify({ playing: true }));
  await within(new Promise((res) => process.stdin.on('close', res).resume()), 90000, 'the test to finish');
  ok = true;
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack || err) }));
} finally {
  if (ok) console.log(JSON.stringify({ ok: true }));
  await c.destroy();
  process.exit(ok ? 0 : 1);
}
