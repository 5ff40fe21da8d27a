package interop

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/disgoorg/disgo"
	"github.com/disgoorg/disgo/bot"
	"github.com/disgoorg/disgo/cache"
	"github.com/disgoorg/disgo/discord"
	"github.com/disgoorg/disgo/events"
	"github.com/disgoorg/disgo/gateway"
	"github.com/disgoorg/disgo/rest"
	"github.com/disgoorg/snowflake/v2"
)

type disgoClient struct {
	client   *bot.Client
	ready    chan struct{}
	guilds   chan snowflake.ID
	messages chan discord.Message
	resumed  chan struct{}
}

func newDisgo(t *testing.T, c *chorus, token string, compression gateway.CompressionType) *disgoClient {
	t.Helper()
	d := &disgoClient{ready: make(chan struct{}, 1), guilds: make(chan snowflake.ID, 8),
		messages: make(chan discord.Message, 256), resumed: make(chan struct{}, 4)}
	client, err := disgo.New(token,
		bot.WithRestClientConfigOpts(rest.WithURL("http://"+c.HTTP+"/api/v10")),
		bot.WithCacheConfigOpts(cache.WithCaches(cache.FlagsAll)),
		bot.WithGatewayConfigOpts(
			gateway.WithURL("ws://"+c.HTTP),
			gateway.WithCompression(compression),
			gateway.WithIntents(gateway.IntentGuilds, gateway.IntentGuildMessages, gateway.IntentMessageContent, gateway.IntentGuildMembers),
		),
		bot.WithEventListenerFunc(func(e *events.Ready) { d.ready <- struct{}{} }),
		bot.WithEventListenerFunc(func(e *events.GuildReady) { d.guilds <- e.GuildID }),
		bot.WithEventListenerFunc(func(e *events.MessageCreate) { d.messages <- e.Message }),
		bot.WithEventListenerFunc(func(e *events.Resumed) { d.resumed <- struct{}{} }),
	)
	if err != nil {
		t.Fatal(err)
	}
	d.client = client
	t.Cleanup(func() { client.Close(context.Background()) })
	if err := client.OpenGateway(within(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *disgoClient) waitReady(t *testing.T, guild string) {
	t.Helper()
	select {
	case <-d.ready:
	case <-time.After(20 * time.Second):
		t.Fatal("no READY")
	}
	select {
	case id := <-d.guilds:
		if id.String() != guild {
			t.Fatalf("guild ready for %s, want %s", id, guild)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no GUILD_CREATE")
	}
}

// waitMessage returns the first message with content, failing after 20 s.
func (d *disgoClient) waitMessage(t *testing.T, content string) discord.Message {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-d.messages:
			if m.Content == content {
				return m
			}
		case <-deadline:
			t.Fatalf("no message %q", content)
		}
	}
}

func TestDisgoChat(t *testing.T) {
	c := startChorus(t)
	for _, comp := range []gateway.CompressionType{gateway.CompressionNone, gateway.CompressionZlibStream, gateway.CompressionZstdStream} {
		t.Run(string(comp), func(t *testing.T) {
			b := newDisgo(t, c, c.Tokens["bot"], comp)
			b.waitReady(t, c.GuildID)
			a := newDisgo(t, c, c.Tokens["alice"], comp)
			a.waitReady(t, c.GuildID)
			general := snowflake.MustParse(c.General)

			// Guild state reached disgo's cache, the bot's own member included.
			if _, ok := b.client.Caches.Channel(general); !ok {
				t.Fatal("#general not cached from GUILD_CREATE")
			}
			if _, ok := b.client.Caches.Member(snowflake.MustParse(c.GuildID), snowflake.MustParse(c.IDs["bot"])); !ok {
				t.Fatal("bot member not cached from GUILD_CREATE")
			}

			// Bot to alice.
			content := "hello from disgo bot " + string(comp)
			sent, err := b.client.Rest.CreateMessage(general, discord.NewMessageCreate().WithContent(content).WithNonce("nonce-b-"+string(comp)))
			if err != nil {
				t.Fatal(err)
			}
			got := a.waitMessage(t, content)
			if got.ID != sent.ID || got.Author.ID.String() != c.IDs["bot"] || got.Nonce != discord.Nonce("nonce-b-"+string(comp)) {
				t.Fatalf("alice got %+v", got)
			}
			// Alice to bot.
			content = "hello from alice " + string(comp)
			if _, err := a.client.Rest.CreateMessage(general, discord.NewMessageCreate().WithContent(content).WithNonce("nonce-a")); err != nil {
				t.Fatal(err)
			}
			got = b.waitMessage(t, content)
			if got.Author.ID.String() != c.IDs["alice"] || got.Nonce != "nonce-a" {
				t.Fatalf("bot got %+v", got)
			}
			// enforce_nonce: the retry returns the first message.
			m1, err := b.client.Rest.CreateMessage(general, discord.NewMessageCreate().WithContent("idempotent").WithNonce("retry-"+string(comp)).WithEnforceNonce(true))
			if err != nil {
				t.Fatal(err)
			}
			m2, err := b.client.Rest.CreateMessage(general, discord.NewMessageCreate().WithContent("idempotent").WithNonce("retry-"+string(comp)).WithEnforceNonce(true))
			if err != nil || m1.ID != m2.ID {
				t.Fatalf("enforce_nonce: %v %v %v", m1.ID, m2.ID, err)
			}
		})
	}
}

func TestDisgoResumeGetsExactlyMissedEvents(t *testing.T) {
	c := startChorus(t)
	a := newDisgo(t, c, c.Tokens["alice"], gateway.CompressionNone)
	a.waitReady(t, c.GuildID)
	b := newDisgo(t, c, c.Tokens["bot"], gateway.CompressionNone)
	b.waitReady(t, c.GuildID)
	general := snowflake.MustParse(c.General)

	// Drop alice with a resumable code, send while she is away, reconnect.
	a.client.Gateway.CloseWithCode(context.Background(), 4000, "test drop")
	for i := 0; i < 5; i++ {
		if _, err := b.client.Rest.CreateMessage(general, discord.NewMessageCreate().WithContent(fmt.Sprintf("missed %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.client.Gateway.Open(within(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.resumed:
	case <-time.After(20 * time.Second):
		t.Fatal("alice did not resume")
	}
	if _, err := b.client.Rest.CreateMessage(general, discord.NewMessageCreate().WithContent("after")); err != nil {
		t.Fatal(err)
	}
	var got []string
	deadline := time.After(20 * time.Second)
	for len(got) == 0 || got[len(got)-1] != "after" {
		select {
		case m := <-a.messages:
			got = append(got, m.Content)
		case <-deadline:
			t.Fatalf("got %v", got)
		}
	}
	want := []string{"missed 0", "missed 1", "missed 2", "missed 3", "missed 4", "after"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after resume got %v, want exactly %v", got, want)
	}
	select {
	case <-a.ready:
		t.Fatal("alice re-identified instead of resuming")
	default:
	}
}
