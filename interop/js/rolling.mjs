// An unmodified discord.js client behind the test's TCP balancer while the
// cluster's nodes restart one after another (discordjs_rolling_test.go).
// It prints what it sees, one line each: "ready" (a READY: the first, or a
// new session), "resumed" (RESUMED) and "message <content>"; the Go test
// judges. It leaves when its stdin closes.
import { Client, Events, GatewayIntentBits } from 'discord.js';
import { env } from './common.mjs';

const HTTP = env('CHORUS_HTTP');
const c = new Client({
  intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.MessageContent],
  rest: { api: `http://${HTTP}/api` },
});
c.on(Events.ShardReady, () => console.log('ready'));
c.on(Events.ShardResume, () => console.log('resumed'));
c.on(Events.MessageCreate, (m) => console.log(`message ${m.content}`));
c.on(Events.Error, (e) => console.error('error:', e.message));
process.stdin.on('end', async () => {
  await c.destroy();
  process.exit(0);
});
process.stdin.resume();
await c.login(env('CHORUS_BOT_TOKEN'));
