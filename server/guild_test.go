package server_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func TestIntentsFiltering(t *testing.T) {
	f := start(t, nil)
	// GUILDS only: no MESSAGE_CREATE at all.
	guildsOnly := f.dial("v=10")
	guildsOnly.ready(f.demo.AliceToken, 1)
	guildsOnly.waitFor("GUILD_CREATE")
	// GUILDS|GUILD_MESSAGES without MESSAGE_CONTENT: empty content.
	noContent := f.dial("v=10")
	noContent.ready(f.demo.BobToken, 1|1<<9)
	noContent.waitFor("GUILD_CREATE")

	f.rest("POST", "/api/v10/channels/"+f.demo.General.String()+"/messages", f.demo.BotToken, map[string]any{"content": "secret sauce"}, nil)
	var m messageEvent
	json.Unmarshal(noContent.waitFor("MESSAGE_CREATE").D, &m)
	if m.Content != "" || m.ID == "" {
		t.Fatalf("without MESSAGE_CONTENT got content %q", m.Content)
	}
	// Their own messages keep content.
	f.rest("POST", "/api/v10/channels/"+f.demo.General.String()+"/messages", f.demo.BobToken, map[string]any{"content": "mine"}, nil)
	json.Unmarshal(noContent.waitFor("MESSAGE_CREATE").D, &m)
	if m.Content != "mine" {
		t.Fatalf("own message content %q", m.Content)
	}
	select {
	case fr := <-guildsOnly.frames:
		if fr.name() == "MESSAGE_CREATE" {
			t.Fatal("MESSAGE_CREATE without GUILD_MESSAGES")
		}
	case <-time.After(200 * time.Millisecond):
	}
}

func TestRequestGuildMembers(t *testing.T) {
	f := start(t, nil)
	c := f.dial("v=10")
	c.ready(f.demo.BotToken, allIntents)
	c.waitFor("GUILD_CREATE")
	type chunk struct {
		GuildID    string `json:"guild_id"`
		Members    []any  `json:"members"`
		ChunkIndex int    `json:"chunk_index"`
		ChunkCount int    `json:"chunk_count"`
		NotFound   []any  `json:"not_found"`
		Nonce      string `json:"nonce"`
		Presences  []any  `json:"presences"`
	}
	// All members, numbers for ids as discord.py sends them.
	c.send(fmt.Sprintf(`{"op":8,"d":{"guild_id":%d,"query":"","limit":0,"presences":true,"nonce":"abc"}}`, f.demo.GuildID))
	var ch chunk
	json.Unmarshal(c.waitFor("GUILD_MEMBERS_CHUNK").D, &ch)
	if ch.Nonce != "abc" || len(ch.Members) != 3 || ch.ChunkCount != 1 || ch.GuildID != f.demo.GuildID.String() || ch.Presences == nil {
		t.Fatalf("chunk = %+v", ch)
	}
	// By id, with one unknown.
	c.send(fmt.Sprintf(`{"op":8,"d":{"guild_id":"%d","user_ids":["%d","42"],"nonce":"n2"}}`, f.demo.GuildID, f.demo.Alice.ID))
	json.Unmarshal(c.waitFor("GUILD_MEMBERS_CHUNK").D, &ch)
	if ch.Nonce != "n2" || len(ch.Members) != 1 || len(ch.NotFound) != 1 {
		t.Fatalf("by id = %+v", ch)
	}
	// Prefix query.
	c.send(fmt.Sprintf(`{"op":8,"d":{"guild_id":"%d","query":"bo","limit":10,"nonce":"n3"}}`, f.demo.GuildID))
	json.Unmarshal(c.waitFor("GUILD_MEMBERS_CHUNK").D, &ch)
	if ch.Nonce != "n3" || len(ch.Members) != 1 {
		t.Fatalf("query = %+v", ch)
	}
	// A second "all members" within 30 s is rate limited, not closed.
	c.send(fmt.Sprintf(`{"op":8,"d":{"guild_id":"%d","query":"","limit":0,"nonce":"n4"}}`, f.demo.GuildID))
	rl := c.waitFor("RATE_LIMITED")
	var r struct {
		Opcode int `json:"opcode"`
		Meta   struct {
			Nonce string `json:"nonce"`
		} `json:"meta"`
	}
	json.Unmarshal(rl.D, &r)
	if r.Opcode != 8 || r.Meta.Nonce != "n4" {
		t.Fatalf("RATE_LIMITED = %s", rl.D)
	}
}

func TestPresenceAndMembership(t *testing.T) {
	f := start(t, nil)
	bot := f.dial("v=10")
	bot.ready(f.demo.BotToken, allIntents)
	bot.waitFor("GUILD_CREATE")

	alice := f.dial("v=10")
	alice.ready(f.demo.AliceToken, allIntents)
	alice.waitFor("GUILD_CREATE")
	var pu struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		Status string `json:"status"`
	}
	var p frame
	for i := 0; i < 5 && pu.User.ID != f.demo.Alice.ID.String(); i++ {
		p = bot.waitFor("PRESENCE_UPDATE")
		json.Unmarshal(p.D, &pu)
	}
	if pu.User.ID != f.demo.Alice.ID.String() || pu.Status != "online" {
		t.Fatalf("presence = %s", p.D)
	}
	alice.send(`{"op":3,"d":{"since":null,"activities":[{"name":"chess","type":0}],"status":"dnd","afk":false}}`)
	json.Unmarshal(bot.waitFor("PRESENCE_UPDATE").D, &pu)
	if pu.Status != "dnd" {
		t.Fatalf("op 3 presence = %+v", pu)
	}

	// A new user joins: the bot sees GUILD_MEMBER_ADD, the new user's live
	// session receives the guild.
	var carol struct {
		User  struct{ ID string } `json:"user"`
		Token string              `json:"token"`
	}
	f.admin(t, "POST", "/admin/v1/users", map[string]any{"username": "carol"}, &carol)
	cs := f.dial("v=10")
	cs.ready(carol.Token, allIntents)
	f.admin(t, "PUT", "/admin/v1/guilds/"+f.demo.GuildID.String()+"/members/"+carol.User.ID, map[string]any{}, nil)
	bot.waitFor("GUILD_MEMBER_ADD")
	cs.waitFor("GUILD_CREATE")
	f.rest("POST", "/api/v10/channels/"+f.demo.General.String()+"/messages", f.demo.BotToken, map[string]any{"content": "welcome carol"}, nil)
	cs.waitMessage("welcome carol")

	// Removed again: GUILD_DELETE to carol, GUILD_MEMBER_REMOVE to the bot,
	// and carol receives nothing more from the guild.
	req := fmt.Sprintf("/admin/v1/guilds/%s/members/%s", f.demo.GuildID, carol.User.ID)
	f.admin(t, "DELETE", req, nil, nil)
	cs.waitFor("GUILD_DELETE")
	bot.waitFor("GUILD_MEMBER_REMOVE")
	var e restError
	if r := f.rest("POST", "/api/v10/channels/"+f.demo.General.String()+"/messages", carol.Token, map[string]any{"content": "x"}, &e); r.StatusCode != 403 {
		t.Fatalf("removed member can post: %d", r.StatusCode)
	}
}
