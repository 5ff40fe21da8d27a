// Voice acceptance test of discord.js 14 + @discordjs/voice against a
// running Chorus (started by discordjs_voice_test.go). The bot and alice
// join the demo voice channel; each plays its own Opus fixture (frames
// encoded once with opusenc, loadtest/opus) and receives the other's; the
// received frames must equal the sent ones byte for byte, attributed to the
// right user. Exits 0 only if every check passed.
import { Readable } from 'node:stream';
import { Client, Events, GatewayIntentBits } from 'discord.js';
import {
  joinVoiceChannel, entersState, VoiceConnectionStatus, createAudioPlayer, createAudioResource,
  StreamType, EndBehaviorType, AudioPlayerStatus,
} from '@discordjs/voice';
import { env, within, frames } from './common.mjs';

const HTTP = env('CHORUS_HTTP');
const GUILD = env('CHORUS_GUILD');
const LOUNGE = env('CHORUS_LOUNGE');

async function login(token) {
  const c = new Client({ intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildVoiceStates], rest: { api: `http://${HTTP}/api` } });
  await within(Promise.all([new Promise((res) => c.once(Events.ClientReady, res)), c.login(token)]), 30000, 'login');
  return c;
}

async function join(c) {
  const guild = c.guilds.cache.get(GUILD);
  const conn = joinVoiceChannel({ channelId: LOUNGE, guildId: GUILD, adapterCreator: guild.voiceAdapterCreator,
    selfDeaf: false, selfMute: false, group: c.user.id });
  await entersState(conn, VoiceConnectionStatus.Ready, 20000);
  return conn;
}

function collect(conn, userId) {
  const got = [];
  const stream = conn.receiver.subscribe(userId, { end: { behavior: EndBehaviorType.AfterSilence, duration: 1500 } });
  stream.on('data', (chunk) => got.push(Buffer.from(chunk)));
  const ended = new Promise((res) => stream.once('end', res));
  return { got, ended };
}

function play(conn, packets) {
  const player = createAudioPlayer();
  conn.subscribe(player);
  player.play(createAudioResource(Readable.from(packets), { inputType: StreamType.Opus }));
  return within(new Promise((res) => player.once(AudioPlayerStatus.Idle, res)), 30000, 'playback');
}

const results = {};
let bot, alice, botConn, aliceConn;
try {
  const sentByBot = frames('../loadtest/opus/a.frames');
  const sentByAlice = frames('../loadtest/opus/b.frames');
  bot = await login(env('CHORUS_BOT_TOKEN'));
  alice = await login(env('CHORUS_ALICE_TOKEN'));
  botConn = await join(bot);
  aliceConn = await join(alice);
  results.mode = botConn.state.networking?.state?.connectionData?.encryptionMode;
  if (results.mode !== env('CHORUS_EXPECT_MODE')) throw new Error(`selected ${results.mode}`);
  results.ready = true;

  const atAlice = collect(aliceConn, env('CHORUS_BOT_ID'));
  const atBot = collect(botConn, env('CHORUS_ALICE_ID'));
  await Promise.all([play(botConn, sentByBot), play(aliceConn, sentByAlice)]);
  await within(Promise.all([atAlice.ended, atBot.ended]), 20000, 'receive streams ending');

  for (const [name, got, sent] of [['alice from bot', atAlice.got, sentByBot], ['bot from alice', atBot.got, sentByAlice]]) {
    // The player appends five silence frames (F8 FF FE) after the stream.
    const audio = got.filter((f) => !(f.length === 3 && f[0] === 0xf8 && f[1] === 0xff && f[2] === 0xfe));
    if (audio.length !== sent.length) throw new Error(`${name}: received ${audio.length} frames, sent ${sent.length}`);
    for (let i = 0; i < sent.length; i++) {
      if (!audio[i].equals(sent[i])) {
        // Say what arrived instead (a reorder, a repeat, a stranger) so a
        // failure can be told apart from the next.
        const at = sent.findIndex((f) => f.equals(audio[i]));
        const around = audio.slice(Math.max(0, i - 2), i + 3).map((f) => sent.findIndex((s) => s.equals(f)));
        throw new Error(`${name}: frame ${i} differs: it is sent frame ${at} (-1: none); received ${i - 2}..${i + 2} are sent ${around}`);
      }
    }
    results[name] = audio.length;
  }
  console.log(JSON.stringify({ ok: true, results }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack || err), results }));
  process.exitCode = 1;
} finally {
  botConn?.destroy();
  aliceConn?.destroy();
  await bot?.destroy();
  await alice?.destroy();
  process.exit();
}
