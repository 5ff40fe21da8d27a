package server_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
)

// Strict client libraries decode every object into typed structs and throw
// when a field Discord always sends is missing or has another type (one
// never cached a guild because roles lacked colors). These are the fields
// Discord always sends, with their JSON types, per object (Discord's API
// documentation; the required fields of discord-api-types v10). Kinds: s
// string, n number, b bool, z null, o object, a array; "a:x" is an array
// of x objects and "o:x" one x object, each checked in turn.
var shapes = map[string]map[string]string{
	"user": {"id": "s", "username": "s", "discriminator": "s", "global_name": "s|z", "avatar": "s|z"},
	"role": {"id": "s", "name": "s", "color": "n", "colors": "o:role colors", "hoist": "b", "position": "n",
		"permissions": "s", "managed": "b", "mentionable": "b", "flags": "n"},
	"role colors": {"primary_color": "n", "secondary_color": "n|z", "tertiary_color": "n|z"},
	"member":      {"user": "o:user", "roles": "a", "joined_at": "s|z", "deaf": "b", "mute": "b", "flags": "n"},
	"guild": {"id": "s", "name": "s", "icon": "s|z", "splash": "s|z", "discovery_splash": "s|z", "owner_id": "s",
		"afk_channel_id": "s|z", "afk_timeout": "n", "verification_level": "n", "default_message_notifications": "n",
		"explicit_content_filter": "n", "roles": "a:role", "emojis": "a", "features": "a", "mfa_level": "n",
		"application_id": "s|z", "system_channel_id": "s|z", "system_channel_flags": "n", "rules_channel_id": "s|z",
		"vanity_url_code": "s|z", "description": "s|z", "banner": "s|z", "premium_tier": "n", "preferred_locale": "s",
		"public_updates_channel_id": "s|z", "nsfw_level": "n", "premium_progress_bar_enabled": "b",
		"hub_type": "n|z", "safety_alerts_channel_id": "s|z", "incidents_data": "o|z"},
	"guild create": {"joined_at": "s", "large": "b", "member_count": "n", "voice_states": "a:voice state",
		"members": "a:member", "channels": "a:channel", "threads": "a", "presences": "a", "stage_instances": "a",
		"guild_scheduled_events": "a", "soundboard_sounds": "a"},
	"channel": {"id": "s", "type": "n", "guild_id": "s", "name": "s", "position": "n",
		"permission_overwrites": "a:overwrite", "parent_id": "s|z", "nsfw": "b", "flags": "n"},
	"text channel":  {"topic": "s|z", "rate_limit_per_user": "n"},
	"voice channel": {"bitrate": "n", "user_limit": "n", "rtc_region": "s|z"},
	"overwrite":     {"id": "s", "type": "n", "allow": "s", "deny": "s"},
	"message": {"id": "s", "channel_id": "s", "author": "o:user", "content": "s", "timestamp": "s",
		"edited_timestamp": "s|z", "tts": "b", "mention_everyone": "b", "mentions": "a", "mention_roles": "a",
		"attachments": "a", "embeds": "a", "pinned": "b", "type": "n"},
	"voice state": {"channel_id": "s|z", "user_id": "s", "session_id": "s", "deaf": "b", "mute": "b",
		"self_deaf": "b", "self_mute": "b", "self_video": "b", "suppress": "b", "request_to_speak_timestamp": "s|z"},
	"ready": {"v": "n", "user": "o:user", "guilds": "a:unavailable guild", "session_id": "s",
		"resume_gateway_url": "s", "application": "o:ready application"},
	"unavailable guild": {"id": "s", "unavailable": "b"},
	"application": {"id": "s", "name": "s", "icon": "s|z", "description": "s", "bot_public": "b",
		"bot_require_code_grant": "b", "summary": "s", "verify_key": "s", "team": "o|z", "flags": "n", "flags_new": "s"},
	"ready application": {"id": "s", "flags": "n"},
}

func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "s"
	case float64:
		return "n"
	case bool:
		return "b"
	case nil:
		return "z"
	case map[string]any:
		return "o"
	case []any:
		return "a"
	}
	return "?"
}

// checkShape reports every field of obj that shape name requires and obj
// lacks or types otherwise, recursing into the objects it names.
func checkShape(t *testing.T, where, name string, obj map[string]any) {
	t.Helper()
	spec, ok := shapes[name]
	if !ok {
		t.Fatalf("no shape %q", name)
	}
	fields := make([]string, 0, len(spec))
	for f := range spec {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for _, field := range fields {
		kinds, nested, _ := strings.Cut(spec[field], ":")
		v, present := obj[field]
		if !present {
			t.Errorf("%s: %s has no %q", where, name, field)
			continue
		}
		k := kindOf(v)
		if !strings.Contains(kinds, k) {
			t.Errorf("%s: %s.%s is %s, want %s", where, name, field, k, kinds)
			continue
		}
		switch x := v.(type) {
		case map[string]any:
			if nested != "" {
				checkShape(t, where+"."+field, nested, x)
			}
		case []any:
			for i, e := range x {
				if m, ok := e.(map[string]any); ok && nested != "" {
					checkNamed(t, fmt.Sprintf("%s.%s[%d]", where, field, i), nested, m)
				}
			}
		}
	}
}

// checkNamed is checkShape plus the extra fields of a channel's type.
func checkNamed(t *testing.T, where, name string, obj map[string]any) {
	t.Helper()
	checkShape(t, where, name, obj)
	if name == "channel" {
		switch obj["type"] {
		case 0.0:
			checkShape(t, where, "text channel", obj)
		case 2.0:
			checkShape(t, where, "voice channel", obj)
		}
	}
}

func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

// Every object Chorus sends, in real dispatches and REST answers, has every
// field Discord always sends, with Discord's types.
func TestObjectShapes(t *testing.T) {
	f := start(t, nil)
	alice := f.dial("v=10")
	checkShape(t, "READY", "ready", decodeObject(t, mustJSON(alice.ready(f.demo.AliceToken, allIntents))))
	alice.waitFor("GUILD_CREATE")
	// Alice in voice, so that the next GUILD_CREATE carries a voice state.
	alice.send(map[string]any{"op": 4, "d": map[string]any{"guild_id": f.demo.GuildID.String(),
		"channel_id": f.demo.Lounge.String(), "self_mute": false, "self_deaf": false}})
	checkShape(t, "VOICE_STATE_UPDATE", "voice state", decodeObject(t, alice.waitFor("VOICE_STATE_UPDATE").D))

	bob := f.dial("v=10")
	bob.ready(f.demo.BobToken, allIntents)
	gc := decodeObject(t, bob.waitFor("GUILD_CREATE").D)
	checkShape(t, "GUILD_CREATE", "guild", gc)
	checkShape(t, "GUILD_CREATE", "guild create", gc)
	if vs, _ := gc["voice_states"].([]any); len(vs) == 0 {
		t.Fatal("GUILD_CREATE without the voice state it was meant to check")
	}
	kinds := map[float64]bool{}
	for _, c := range gc["channels"].([]any) {
		kinds[c.(map[string]any)["type"].(float64)] = true
	}
	if !kinds[0] || !kinds[2] {
		t.Fatalf("GUILD_CREATE lacks a text or a voice channel to check: %v", kinds)
	}

	f.rest("POST", "/api/v10/channels/"+f.demo.General.String()+"/messages", f.demo.AliceToken,
		map[string]any{"content": "shapes"}, nil)
	checkShape(t, "MESSAGE_CREATE", "message", decodeObject(t, bob.waitFor("MESSAGE_CREATE").D))
	f.rest("PATCH", "/api/v10/guilds/"+f.demo.GuildID.String()+"/members/@me", f.demo.AliceToken,
		map[string]any{"nick": "Al"}, nil)
	checkShape(t, "GUILD_MEMBER_UPDATE", "member", decodeObject(t, bob.waitFor("GUILD_MEMBER_UPDATE").D))
	f.admin(t, "POST", "/admin/v1/guilds/"+f.demo.GuildID.String()+"/roles", map[string]any{"name": "new"}, nil)
	rc := decodeObject(t, bob.waitFor("GUILD_ROLE_CREATE").D)
	checkShape(t, "GUILD_ROLE_CREATE", "role", rc["role"].(map[string]any))
	f.admin(t, "POST", "/admin/v1/guilds/"+f.demo.GuildID.String()+"/channels", map[string]any{"name": "v2", "type": 2}, nil)
	checkNamed(t, "CHANNEL_CREATE", "channel", decodeObject(t, bob.waitFor("CHANNEL_CREATE").D))

	// REST answers.
	rest := func(path string) []byte {
		var raw json.RawMessage
		if r := f.rest("GET", path, f.demo.BobToken, nil, &raw); r.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, r.StatusCode)
		}
		return raw
	}
	checkShape(t, "GET users/@me", "user", decodeObject(t, rest("/api/v10/users/@me")))
	checkShape(t, "GET applications/@me", "application", decodeObject(t, rest("/api/v10/oauth2/applications/@me")))
	checkShape(t, "GET guild", "guild", decodeObject(t, rest("/api/v10/guilds/"+f.demo.GuildID.String())))
	var list []map[string]any
	json.Unmarshal(rest("/api/v10/guilds/"+f.demo.GuildID.String()+"/channels"), &list)
	for i, c := range list {
		checkNamed(t, fmt.Sprintf("GET channels[%d]", i), "channel", c)
	}
	json.Unmarshal(rest("/api/v10/guilds/"+f.demo.GuildID.String()+"/members?limit=10"), &list)
	for i, m := range list {
		checkShape(t, fmt.Sprintf("GET members[%d]", i), "member", m)
	}
	json.Unmarshal(rest("/api/v10/channels/"+f.demo.General.String()+"/messages?limit=1"), &list)
	if len(list) != 1 {
		t.Fatalf("%d messages", len(list))
	}
	checkShape(t, "GET messages[0]", "message", list[0])
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
