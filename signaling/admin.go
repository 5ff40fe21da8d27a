package signaling

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// The admin API creates what must exist before any client connects: users
// and bots (with their tokens), guilds, channels, roles and memberships. It
// is authenticated by the node's admin token ("Authorization: Bearer ...").

func (a *API) admin(mux *http.ServeMux) {
	h := func(pattern string, fn func(w http.ResponseWriter, r *http.Request) error) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			tok := auth.StripScheme(r.Header.Get("Authorization"))
			if a.cfg.AdminToken == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(a.cfg.AdminToken)) != 1 {
				a.fail(w, errUnauthorized)
				return
			}
			if err := fn(w, r); err != nil {
				a.fail(w, err)
			}
		})
	}
	h("POST /admin/v1/users", a.adminCreateUser)
	h("GET /admin/v1/users", func(w http.ResponseWriter, r *http.Request) error {
		us, err := a.store.ListUsers(r.Context())
		if err != nil {
			return err
		}
		out := make([]guild.User, 0, len(us))
		for _, u := range us {
			out = append(out, guild.UserObject(u))
		}
		writeJSON(w, 200, out)
		return nil
	})
	h("POST /admin/v1/users/{user}/token", a.adminIssueToken)
	h("POST /admin/v1/guilds", a.adminCreateGuild)
	h("GET /admin/v1/guilds", func(w http.ResponseWriter, r *http.Request) error {
		gs, err := a.store.ListGuilds(r.Context())
		if err != nil {
			return err
		}
		if gs == nil {
			gs = []store.Guild{}
		}
		writeJSON(w, 200, gs)
		return nil
	})
	h("POST /admin/v1/guilds/{guild}/channels", a.adminCreateChannel)
	h("POST /admin/v1/guilds/{guild}/roles", a.adminCreateRole)
	h("PUT /admin/v1/guilds/{guild}/members/{user}", a.adminPutMember)
	h("PATCH /admin/v1/guilds/{guild}/roles/{role}", a.adminPatchRole)
	h("PUT /admin/v1/channels/{channel}/permissions/{overwrite}", a.adminPutOverwrite)
	h("DELETE /admin/v1/guilds/{guild}/members/{user}", a.adminDeleteMember)
	h("GET /admin/v1/cluster", a.adminCluster)
	h("POST /admin/v1/cluster/nodes/{node}/drain", a.adminDrain)
	// Go's profiles of the running node (net/http/pprof), behind the admin
	// token: "go tool pprof -http : 'http://node/admin/v1/debug/pprof/profile?seconds=10'"
	// with the header, or curl -H 'Authorization: Bearer ...' to a file.
	for _, p := range []struct {
		pattern string
		fn      http.HandlerFunc
	}{{"GET /admin/v1/debug/pprof/", pprof.Index}, {"GET /admin/v1/debug/pprof/profile", pprof.Profile},
		{"GET /admin/v1/debug/pprof/trace", pprof.Trace}, {"GET /admin/v1/debug/pprof/symbol", pprof.Symbol}} {
		h(p.pattern, func(w http.ResponseWriter, r *http.Request) error {
			// pprof.Index finds a named profile after its own prefix.
			r.URL.Path = strings.Replace(r.URL.Path, "/admin/v1/debug/pprof/", "/debug/pprof/", 1)
			p.fn(w, r)
			return nil
		})
	}
}

type createdUser struct {
	User  guild.User `json:"user"`
	Token string     `json:"token"`
}

func (a *API) adminCreateUser(w http.ResponseWriter, r *http.Request) error {
	var p struct {
		Username   string `json:"username"`
		GlobalName string `json:"global_name"`
		Bot        bool   `json:"bot"`
		// Privileged says which privileged intents a bot may use: true
		// (the default) for all, false for none, or a list of names from
		// protocol.PrivilegedIntentNames ("presences", "guild_members",
		// "message_content").
		Privileged json.RawMessage `json:"privileged_intents"`
	}
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	if err := guild.CheckLength("username", p.Username, guild.MinUsername, guild.MaxUsername); err != nil {
		return err
	}
	if err := guild.CheckLength("global_name", p.GlobalName, 0, guild.MaxGlobalName); err != nil {
		return err
	}
	if _, err := a.store.UserByName(r.Context(), p.Username); err == nil {
		return guild.InvalidForm("username", "USERNAME_ALREADY_TAKEN", "Username is unavailable.")
	}
	u := store.User{ID: a.ids.Next(), Username: p.Username, GlobalName: p.GlobalName, Bot: p.Bot}
	if p.Bot {
		flags, err := privilegedFlags(p.Privileged)
		if err != nil {
			return err
		}
		u.AppFlags = flags
	}
	if err := a.store.PutUser(r.Context(), u); err != nil {
		return err
	}
	writeJSON(w, 201, createdUser{User: guild.UserObject(u), Token: a.signer.Issue(auth.PurposeUser, u.ID, u.TokenGen)})
	return nil
}

// privilegedFlags turns privileged_intents into application flags.
func privilegedFlags(raw json.RawMessage) (int, error) {
	invalid := guild.InvalidForm("privileged_intents", "BASE_TYPE_INVALID",
		`Must be true, false or a list of "presences", "guild_members", "message_content".`)
	var all bool
	if len(raw) == 0 || string(raw) == "null" {
		return protocol.AppFlagsAllPrivileged, nil
	}
	if json.Unmarshal(raw, &all) == nil {
		if all {
			return protocol.AppFlagsAllPrivileged, nil
		}
		return 0, nil
	}
	var names []string
	if json.Unmarshal(raw, &names) != nil {
		return 0, invalid
	}
	flags := 0
	for _, n := range names {
		f, ok := protocol.PrivilegedIntentNames[n]
		if !ok {
			return 0, invalid
		}
		flags |= f
	}
	return flags, nil
}

// adminIssueToken issues a new token; with ?revoke=true every older token of
// the user stops working.
func (a *API) adminIssueToken(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "user")
	if err != nil {
		return err
	}
	u, err := a.store.GetUser(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return guild.ErrUnknownUser
	} else if err != nil {
		return fmt.Errorf("%w: %v", errStoreUnavailable, err)
	}
	if rv, _ := strconv.ParseBool(r.URL.Query().Get("revoke")); rv {
		u.TokenGen++
		if err := a.store.PutUser(r.Context(), u); err != nil {
			return err
		}
		a.revoke(u.ID)
	}
	writeJSON(w, 200, createdUser{User: guild.UserObject(u), Token: a.signer.Issue(auth.PurposeUser, u.ID, u.TokenGen)})
	return nil
}

func (a *API) adminCreateGuild(w http.ResponseWriter, r *http.Request) error {
	var p struct {
		Name    string       `json:"name"`
		OwnerID snowflake.ID `json:"owner_id"`
	}
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	g, err := a.router.CreateGuild(r.Context(), p.Name, p.OwnerID)
	if err != nil {
		return err
	}
	writeJSON(w, 201, g)
	return nil
}

func (a *API) adminCreateChannel(w http.ResponseWriter, r *http.Request) error {
	gid, err := pathID(r, "guild")
	if err != nil {
		return err
	}
	var p struct {
		Name       string            `json:"name"`
		Type       int               `json:"type"`
		Topic      string            `json:"topic"`
		ParentID   snowflake.ID      `json:"parent_id"`
		Position   int               `json:"position"`
		UserLimit  int               `json:"user_limit"`
		Bitrate    int               `json:"bitrate"`
		Overwrites []guild.Overwrite `json:"permission_overwrites"`
	}
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	c := store.Channel{GuildID: gid, Name: p.Name, Type: p.Type, Topic: p.Topic, ParentID: p.ParentID,
		Position: p.Position, UserLimit: p.UserLimit, Bitrate: p.Bitrate}
	for _, o := range p.Overwrites {
		allow, err1 := strconv.ParseUint(o.Allow, 10, 64)
		deny, err2 := strconv.ParseUint(o.Deny, 10, 64)
		if (o.Allow != "" && err1 != nil) || (o.Deny != "" && err2 != nil) || o.Type < 0 || o.Type > 1 {
			return guild.InvalidForm("permission_overwrites", "BASE_TYPE_INVALID", "Invalid overwrite.")
		}
		c.Overwrites = append(c.Overwrites, store.Overwrite{ID: o.ID, Type: o.Type, Allow: allow, Deny: deny})
	}
	out, err := a.router.CreateChannel(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, 201, out)
	return nil
}

func (a *API) adminCreateRole(w http.ResponseWriter, r *http.Request) error {
	gid, err := pathID(r, "guild")
	if err != nil {
		return err
	}
	var p struct {
		Name        string `json:"name"`
		Permissions string `json:"permissions"`
		Color       int    `json:"color"`
		Hoist       bool   `json:"hoist"`
		Mentionable bool   `json:"mentionable"`
	}
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	perms, err := strconv.ParseUint(p.Permissions, 10, 64)
	if p.Permissions != "" && err != nil {
		return guild.InvalidForm("permissions", "NUMBER_TYPE_COERCE", "Value is not a permission bitfield.")
	}
	out, err := a.router.CreateRole(r.Context(), store.Role{GuildID: gid, Name: p.Name, Permissions: perms,
		Color: p.Color, Hoist: p.Hoist, Mentionable: p.Mentionable})
	if err != nil {
		return err
	}
	writeJSON(w, 201, out)
	return nil
}

func (a *API) adminPutMember(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "guild", "user")
	if err != nil {
		return err
	}
	gid, uid := ids[0], ids[1]
	var p struct {
		Roles []snowflake.ID `json:"roles"`
		Nick  string         `json:"nick"`
		Mute  bool           `json:"mute"`
		Deaf  bool           `json:"deaf"`
	}
	if r.ContentLength != 0 {
		if err := decodeBody(r, &p); err != nil {
			return err
		}
	}
	m, added, err := a.router.PutMember(r.Context(), store.Member{GuildID: gid, UserID: uid, Roles: p.Roles,
		Nick: p.Nick, Mute: p.Mute, Deaf: p.Deaf})
	if err != nil {
		return err
	}
	status := 200
	if added {
		status = 201
	}
	writeJSON(w, status, m)
	return nil
}

func (a *API) adminDeleteMember(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "guild", "user")
	if err != nil {
		return err
	}
	gid, uid := ids[0], ids[1]
	if err := a.router.RemoveMember(r.Context(), gid, uid); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// adminPatchRole changes a role's name or permissions; people in voice get
// the new permissions at once.
func (a *API) adminPatchRole(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "guild", "role")
	if err != nil {
		return err
	}
	var p struct {
		Name        *string `json:"name"`
		Permissions *string `json:"permissions"`
	}
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	var perms *uint64
	if p.Permissions != nil {
		v, err := strconv.ParseUint(*p.Permissions, 10, 64)
		if err != nil {
			return guild.InvalidForm("permissions", "NUMBER_TYPE_COERCE", "Value is not a permission bitfield.")
		}
		perms = &v
	}
	out, err := a.router.UpdateRole(r.Context(), ids[0], ids[1], p.Name, perms)
	if err != nil {
		return err
	}
	writeJSON(w, 200, out)
	return nil
}

// adminPutOverwrite sets a channel permission overwrite, in the shape of
// Discord's PUT /channels/{id}/permissions/{overwrite_id}.
func (a *API) adminPutOverwrite(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "channel", "overwrite")
	if err != nil {
		return err
	}
	var p struct {
		Type  *int   `json:"type"`
		Allow string `json:"allow"`
		Deny  string `json:"deny"`
	}
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	allow, err1 := strconv.ParseUint(cmp.Or(p.Allow, "0"), 10, 64)
	deny, err2 := strconv.ParseUint(cmp.Or(p.Deny, "0"), 10, 64)
	if err1 != nil || err2 != nil || p.Type == nil || *p.Type < 0 || *p.Type > 1 {
		return guild.InvalidForm("permission_overwrites", "BASE_TYPE_INVALID", "Invalid overwrite.")
	}
	out, err := a.router.SetOverwrite(r.Context(), ids[0], store.Overwrite{ID: ids[1], Type: *p.Type, Allow: allow, Deny: deny})
	if err != nil {
		return err
	}
	writeJSON(w, 200, out)
	return nil
}
