package server

import (
	"context"
	"errors"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
	"github.com/chorus-voice/chorus/web"
)

// DemoGuildName names the guild --demo creates.
const DemoGuildName = "Chorus Demo"

// Demo is what --demo created (or found from an earlier start).
type Demo struct {
	GuildID                 snowflake.ID
	General, Random, Lounge snowflake.ID // text, text, voice
	Moderator, Member       snowflake.ID // roles
	Bot, Alice, Bob         store.User
	BotToken, AliceToken    string
	BobToken                string
}

// SeedDemo creates, idempotently, a demo guild with two text channels, a
// voice channel, two roles, a bot user with every privileged intent and two
// human users, all members. Running it again finds and returns the same
// records with fresh tokens, and has the web client offer alice and bob.
func (n *Node) SeedDemo(ctx context.Context) (Demo, error) {
	var d Demo
	var err error
	if d.Bot, err = n.ensureUser(ctx, "chorus-bot", "Chorus Bot", true); err != nil {
		return d, err
	}
	if d.Alice, err = n.ensureUser(ctx, "alice", "Alice", false); err != nil {
		return d, err
	}
	if d.Bob, err = n.ensureUser(ctx, "bob", "Bob", false); err != nil {
		return d, err
	}
	d.BotToken, d.AliceToken, d.BobToken = n.IssueToken(d.Bot), n.IssueToken(d.Alice), n.IssueToken(d.Bob)
	// The web client's sign-in page offers the two people (not the bot).
	n.demoUsers.Store(&[]web.DemoUser{{Username: d.Alice.Username, Token: d.AliceToken}, {Username: d.Bob.Username, Token: d.BobToken}})

	gs, err := n.store.ListGuilds(ctx)
	if err != nil {
		return d, err
	}
	for _, g := range gs {
		if g.Name == DemoGuildName {
			d.GuildID = g.ID
		}
	}
	if d.GuildID == 0 {
		if n.router.Owner(1) == "" {
			return d, errors.New("demo: no node of the cluster serves guilds yet: start --demo on a node with the guild role (--roles), or once one has joined")
		}
		g, err := n.router.CreateGuild(ctx, DemoGuildName, d.Alice.ID)
		if err != nil {
			return d, err
		}
		d.GuildID = g.ID
	}
	cs, err := n.store.ListChannels(ctx, d.GuildID)
	if err != nil {
		return d, err
	}
	find := func(name string, typ int) snowflake.ID {
		for _, c := range cs {
			if c.Name == name && c.Type == typ {
				return c.ID
			}
		}
		return 0
	}
	for _, want := range []struct {
		id   *snowflake.ID
		name string
		typ  int
		pos  int
	}{{&d.General, "general", guild.ChannelText, 0}, {&d.Random, "random", guild.ChannelText, 1}, {&d.Lounge, "Lounge", guild.ChannelVoice, 2}} {
		if *want.id = find(want.name, want.typ); *want.id == 0 {
			c, err := n.router.CreateChannel(ctx, store.Channel{GuildID: d.GuildID, Name: want.name, Type: want.typ, Position: want.pos})
			if err != nil {
				return d, err
			}
			*want.id = c.ID
		}
	}
	rs, err := n.store.ListRoles(ctx, d.GuildID)
	if err != nil {
		return d, err
	}
	for _, want := range []struct {
		id    *snowflake.ID
		name  string
		perms uint64
	}{{&d.Moderator, "Moderator", guild.PermManageMessages | guild.PermMuteMembers | guild.PermDeafenMembers | guild.PermMoveMembers |
		guild.PermManageNicknames},
		{&d.Member, "Member", 0}} {
		for _, r := range rs {
			if r.Name == want.name {
				*want.id = r.ID
			}
		}
		if *want.id == 0 {
			r, err := n.router.CreateRole(ctx, store.Role{GuildID: d.GuildID, Name: want.name, Permissions: want.perms})
			if err != nil {
				return d, err
			}
			*want.id = r.ID
		}
	}
	for _, m := range []struct {
		user  snowflake.ID
		roles []snowflake.ID
	}{{d.Bot.ID, []snowflake.ID{d.Moderator}}, {d.Alice.ID, []snowflake.ID{d.Member}}, {d.Bob.ID, []snowflake.ID{d.Member}}} {
		if _, err := n.store.GetMember(ctx, d.GuildID, m.user); err == nil {
			continue
		}
		if _, _, err := n.router.PutMember(ctx, store.Member{GuildID: d.GuildID, UserID: m.user, Roles: m.roles}); err != nil {
			return d, err
		}
	}
	return d, nil
}

func (n *Node) ensureUser(ctx context.Context, name, display string, bot bool) (store.User, error) {
	u, err := n.store.UserByName(ctx, name)
	if err == nil {
		return u, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return u, err
	}
	u = store.User{ID: n.ids.Next(), Username: name, GlobalName: display, Bot: bot}
	if bot {
		u.AppFlags = protocol.AppFlagsAllPrivileged
	}
	return u, n.store.PutUser(ctx, u)
}
