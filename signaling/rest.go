package signaling

import (
	"encoding/json"
	"errors"
	"github.com/chorus-voice/chorus/cluster"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// API serves the REST subset under /api/v9 and /api/v10 (gateway.md §18)
// and the admin API under /admin/v1 (admin.go). It shares the gateway's
// token check and metrics, and reaches the guild layer through the router.
type API struct {
	cfg     Config
	router  *guild.Router
	store   store.Store
	signer  *auth.Signer
	tokens  tokens
	metrics *Metrics
	limits  *limiter
	ids     *snowflake.Generator
	revoke  func(user guild.ID)
	cluster *cluster.Node
	hub     *Hub
}

// NewAPI returns the REST and admin API. ids numbers the users the admin
// API creates; revoke is told of a user whose tokens the admin API just
// revoked, to end that user's gateway and voice connections.
func NewAPI(cfg Config, d Deps, ids *snowflake.Generator, revoke func(user guild.ID)) *API {
	cfg.setDefaults()
	d.setDefaults(cfg)
	return &API{cfg: cfg, router: d.Router, store: d.Store, signer: d.Signer, tokens: tokens{d.Signer, d.Store},
		metrics: d.Metrics, limits: newLimiter(), ids: ids, revoke: revoke, cluster: d.Cluster, hub: d.Hub}
}

// register adds the API's routes to mux.
func (a *API) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/{ver}/gateway", a.public(a.getGateway))
	a.route(mux, "GET /api/{ver}/gateway/bot", "gateway", a.getGatewayBot)
	a.route(mux, "GET /api/{ver}/users/@me", "users/@me", a.getMe)
	a.route(mux, "GET /api/{ver}/oauth2/applications/@me", "applications/@me", a.getApplication)
	a.route(mux, "GET /api/{ver}/channels/{channel}", "channels", withIDs(a.getChannel, "channel"))
	a.route(mux, "POST /api/{ver}/channels/{channel}/messages", "messages:post", withIDs(a.postMessage, "channel"))
	a.route(mux, "GET /api/{ver}/channels/{channel}/messages", "messages:list", withIDs(a.listMessages, "channel"))
	a.route(mux, "GET /api/{ver}/channels/{channel}/messages/{message}", "messages:get", withIDs(a.getMessage, "channel", "message"))
	a.route(mux, "PATCH /api/{ver}/channels/{channel}/messages/{message}", "messages:patch", withIDs(a.patchMessage, "channel", "message"))
	a.route(mux, "DELETE /api/{ver}/channels/{channel}/messages/{message}", "messages:delete", withIDs(a.deleteMessage, "channel", "message"))
	a.route(mux, "POST /api/{ver}/channels/{channel}/typing", "typing", withIDs(a.postTyping, "channel"))
	a.route(mux, "GET /api/{ver}/guilds/{guild}", "guilds", withIDs(a.getGuild, "guild"))
	a.route(mux, "GET /api/{ver}/guilds/{guild}/channels", "guilds/channels", withIDs(a.getGuildChannels, "guild"))
	a.route(mux, "GET /api/{ver}/guilds/{guild}/members", "guilds/members", withIDs(a.getGuildMembers, "guild"))
	a.route(mux, "PATCH /api/{ver}/guilds/{guild}/members/{user}", "guilds/members:patch", withIDs(a.patchGuildMember, "guild", "user"))
	a.route(mux, "PATCH /api/{ver}/guilds/{guild}/members/@me", "guilds/members:patch", withIDs(a.patchMemberMe, "guild"))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Message: "404: Not Found", Code: 0})
	})
	a.admin(mux)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, u store.User) error

func checkVersion(r *http.Request) error {
	switch r.PathValue("ver") {
	case "v9", "v10":
		return nil
	}
	return errBadVersion
}

func (a *API) public(fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.metrics.RESTRequests.Add(1)
		err := checkVersion(r)
		if err == nil {
			err = fn(w, r)
		}
		if err != nil {
			a.fail(w, err)
		}
	}
}

// route registers an authenticated, rate-limited REST route. The bucket is
// per user, per route and per top-level resource (gateway.md §18.8).
func (a *API) route(mux *http.ServeMux, pattern, bucket string, fn handlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		a.metrics.RESTRequests.Add(1)
		if err := checkVersion(r); err != nil {
			a.fail(w, err)
			return
		}
		u, err := a.tokens.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			if !errors.Is(err, errStoreUnavailable) {
				err = errUnauthorized
			}
			a.fail(w, err)
			return
		}
		major := r.PathValue("channel") + r.PathValue("guild")
		limit := a.cfg.RESTRequestsPerSecond
		remaining, reset, ok := a.limits.take(u.ID.String()+"|"+bucket+"|"+major, limit, restWindow)
		h := w.Header()
		after := time.Until(reset).Seconds()
		h.Set("X-RateLimit-Limit", strconv.Itoa(limit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
		h.Set("X-RateLimit-Reset", strconv.FormatFloat(float64(reset.UnixMilli())/1000, 'f', 3, 64))
		h.Set("X-RateLimit-Reset-After", strconv.FormatFloat(after, 'f', 3, 64))
		h.Set("X-RateLimit-Bucket", bucket)
		if !ok {
			a.metrics.RESTLimited.Add(1)
			h.Set("Retry-After", strconv.Itoa(int(after+0.999)))
			h.Set("X-RateLimit-Scope", "user")
			writeJSON(w, http.StatusTooManyRequests, map[string]any{
				"message": "You are being rate limited.", "retry_after": after, "global": false})
			return
		}
		if err := fn(w, r, u); err != nil {
			a.fail(w, err)
		}
	})
}

func (a *API) fail(w http.ResponseWriter, err error) {
	a.metrics.RESTErrors.Add(1)
	status, body := errorResponse(err)
	switch {
	case errors.Is(err, errStoreUnavailable):
		a.cfg.Logger.Warn("rest: store unavailable", "err", err)
	case status == http.StatusInternalServerError:
		a.cfg.Logger.Error("rest", "err", err)
	}
	writeJSON(w, status, body)
}

func pathID(r *http.Request, name string) (snowflake.ID, error) {
	id, err := snowflake.Parse(r.PathValue(name))
	if err != nil {
		return 0, guild.InvalidForm(name+"_id", "NUMBER_TYPE_COERCE", "Value is not snowflake.")
	}
	return id, nil
}

// ids are the snowflakes of a route's path segments, in the order named.
type ids []snowflake.ID

// withIDs is the shape of most REST handlers: parse the named path
// segments as snowflakes (400 50035 when one is not), call the guild layer,
// and answer its result as JSON with 200, or its error. A nil result
// (an operation with nothing to return) is answered 204.
func withIDs[T any](fn func(r *http.Request, u store.User, id ids) (T, error), names ...string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, u store.User) error {
		id, err := pathIDs(r, names...)
		if err != nil {
			return err
		}
		v, err := fn(r, u, id)
		if err != nil {
			return err
		}
		if any(v) == nil {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	}
}

// noContent is the result of an operation that answers 204.
type noContent = any

// pathIDs parses several path segments as snowflakes, in order.
func pathIDs(r *http.Request, names ...string) ([]snowflake.ID, error) {
	out := make([]snowflake.ID, len(names))
	for i, n := range names {
		id, err := pathID(r, n)
		if err != nil {
			return nil, err
		}
		out[i] = id
	}
	return out, nil
}

func (a *API) getGateway(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, 200, map[string]string{"url": a.cfg.GatewayURL})
	return nil
}

func (a *API) getGatewayBot(w http.ResponseWriter, r *http.Request, u store.User) error {
	writeJSON(w, 200, map[string]any{"url": a.cfg.GatewayURL, "shards": 1,
		"session_start_limit": map[string]int{"total": 1000, "remaining": 1000, "reset_after": 86400000,
			"max_concurrency": a.cfg.IdentifiesPer5s}})
	return nil
}

func (a *API) getMe(w http.ResponseWriter, r *http.Request, u store.User) error {
	writeJSON(w, 200, readyUser{User: guild.UserObject(u), Verified: true})
	return nil
}

func (a *API) getApplication(w http.ResponseWriter, r *http.Request, u store.User) error {
	owner := guild.UserObject(u)
	writeJSON(w, 200, map[string]any{"id": u.ID, "name": u.Username, "description": "", "icon": nil,
		"bot_public": true, "bot_require_code_grant": false, "owner": owner, "bot": owner, "verify_key": "",
		"flags": u.AppFlags, "flags_new": strconv.Itoa(u.AppFlags), "team": nil, "summary": "", "tags": []string{}})
	return nil
}

func (a *API) getChannel(r *http.Request, u store.User, id ids) (guild.Channel, error) {
	return a.router.Channel(r.Context(), id[0], u.ID)
}

type messageParams struct {
	Content      string          `json:"content"`
	Nonce        json.RawMessage `json:"nonce"`
	EnforceNonce bool            `json:"enforce_nonce"`
	TTS          bool            `json:"tts"`
}

// Request body limits. A JSON body holds at most a message (2,000
// characters) with its options; a multipart one may carry files, which
// Chorus reads past but does not keep.
const (
	maxJSONBody      = 1 << 20
	maxMultipartBody = 8 << 20
)

// decodeBody reads a JSON body, or the payload_json part of a multipart one.
func decodeBody(r *http.Request, v any) error {
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var tooLarge *http.MaxBytesError
	switch ct {
	case "application/json":
		if r.ContentLength > maxJSONBody {
			return errBodyTooLarge
		}
		r.Body = http.MaxBytesReader(nil, r.Body, maxJSONBody)
		if err := json.NewDecoder(r.Body).Decode(v); err != nil {
			if errors.As(err, &tooLarge) {
				return errBodyTooLarge
			}
			return guild.InvalidForm("_body", "BASE_TYPE_INVALID", "Request body is not valid JSON.")
		}
		return nil
	case "multipart/form-data":
		if params["boundary"] == "" {
			break
		}
		if r.ContentLength > maxMultipartBody {
			return errBodyTooLarge
		}
		r.Body = http.MaxBytesReader(nil, r.Body, maxMultipartBody)
		if err := r.ParseMultipartForm(maxMultipartBody); err != nil {
			if errors.As(err, &tooLarge) {
				return errBodyTooLarge
			}
			return guild.InvalidForm("_body", "BASE_TYPE_INVALID", "Invalid multipart body.")
		}
		if err := json.Unmarshal([]byte(r.FormValue("payload_json")), v); err != nil {
			return guild.InvalidForm("payload_json", "BASE_TYPE_INVALID", "Not valid JSON.")
		}
		return nil
	}
	return guild.InvalidForm("_body", "CONTENT_TYPE_INVALID", "Expected Content-Type application/json.")
}

func (a *API) postMessage(r *http.Request, u store.User, id ids) (guild.Message, error) {
	var p messageParams
	if err := decodeBody(r, &p); err != nil {
		return guild.Message{}, err
	}
	if string(p.Nonce) == "null" {
		p.Nonce = nil
	}
	return a.router.CreateMessage(r.Context(), guild.CreateMessage{ChannelID: id[0], AuthorID: u.ID,
		Content: p.Content, Nonce: p.Nonce, EnforceNonce: p.EnforceNonce, TTS: p.TTS})
}

func (a *API) listMessages(r *http.Request, u store.User, id ids) ([]guild.Message, error) {
	q := r.URL.Query()
	page := store.Page{Limit: 50}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			return nil, guild.InvalidForm("limit", "NUMBER_TYPE_MAX", "int value should be between 1 and 100.")
		}
		page.Limit = n
	}
	anchors := 0
	for name, dst := range map[string]*snowflake.ID{"before": &page.Before, "after": &page.After, "around": &page.Around} {
		if v := q.Get(name); v != "" {
			anchor, err := snowflake.Parse(v)
			if err != nil {
				return nil, guild.InvalidForm(name, "NUMBER_TYPE_COERCE", "Value is not snowflake.")
			}
			*dst = anchor
			anchors++
		}
	}
	if anchors > 1 {
		return nil, guild.InvalidForm("_query", "BASE_TYPE_INVALID", "before, after and around are mutually exclusive.")
	}
	if page.After == 0 && q.Get("after") != "" {
		page.After = 1 // after=0: from the very first message (gateway.md §17)
	}
	return a.router.ListMessages(r.Context(), id[0], u.ID, page)
}

func (a *API) getMessage(r *http.Request, u store.User, id ids) (guild.Message, error) {
	return a.router.GetMessage(r.Context(), id[0], id[1], u.ID)
}

func (a *API) patchMessage(r *http.Request, u store.User, id ids) (guild.Message, error) {
	var p struct {
		Content *string `json:"content"`
	}
	if err := decodeBody(r, &p); err != nil {
		return guild.Message{}, err
	}
	if p.Content == nil {
		return guild.Message{}, guild.InvalidForm("content", "BASE_TYPE_REQUIRED", "This field is required.")
	}
	return a.router.EditMessage(r.Context(), id[0], id[1], u.ID, *p.Content)
}

func (a *API) deleteMessage(r *http.Request, u store.User, id ids) (noContent, error) {
	return nil, a.router.DeleteMessage(r.Context(), id[0], id[1], u.ID)
}

func (a *API) postTyping(r *http.Request, u store.User, id ids) (noContent, error) {
	return nil, a.router.Typing(r.Context(), id[0], u.ID)
}

func (a *API) getGuild(r *http.Request, u store.User, id ids) (guild.Guild, error) {
	return a.router.GetGuild(r.Context(), id[0], u.ID)
}

func (a *API) getGuildChannels(r *http.Request, u store.User, id ids) ([]guild.Channel, error) {
	return a.router.Channels(r.Context(), id[0], u.ID)
}

func (a *API) getGuildMembers(r *http.Request, u store.User, id ids) ([]guild.Member, error) {
	q := r.URL.Query()
	limit := 1
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return nil, guild.InvalidForm("limit", "NUMBER_TYPE_MAX", "int value should be between 1 and 1000.")
		}
		limit = n
	}
	var after snowflake.ID
	if v := q.Get("after"); v != "" {
		var err error
		if after, err = snowflake.Parse(v); err != nil {
			return nil, guild.InvalidForm("after", "NUMBER_TYPE_COERCE", "Value is not snowflake.")
		}
	}
	return a.router.Members(r.Context(), id[0], u.ID, after, limit)
}

// patchGuildMember is PATCH /guilds/{id}/members/{user}: server mute,
// deafen and nick, enforced in the SFU at once.
func (a *API) patchGuildMember(r *http.Request, u store.User, id ids) (guild.Member, error) {
	return a.modifyMember(r, u, id[0], id[1], true)
}

// patchMemberMe is PATCH /guilds/{id}/members/@me: one's own nick.
func (a *API) patchMemberMe(r *http.Request, u store.User, id ids) (guild.Member, error) {
	return a.modifyMember(r, u, id[0], u.ID, false)
}

func (a *API) modifyMember(r *http.Request, u store.User, gid, uid guild.ID, voice bool) (guild.Member, error) {
	var p struct {
		Mute *bool           `json:"mute"`
		Deaf *bool           `json:"deaf"`
		Nick json.RawMessage `json:"nick"` // absent: unchanged; null or "": removed
	}
	if err := decodeBody(r, &p); err != nil {
		return guild.Member{}, err
	}
	if !voice {
		p.Mute, p.Deaf = nil, nil
	}
	var nick *string
	if len(p.Nick) > 0 {
		n := ""
		if string(p.Nick) != "null" && json.Unmarshal(p.Nick, &n) != nil {
			return guild.Member{}, guild.InvalidForm("nick", "BASE_TYPE_STRING", "Must be a string.")
		}
		nick = &n
	}
	return a.router.ModifyMember(r.Context(), gid, u.ID, uid, p.Mute, p.Deaf, nick)
}
