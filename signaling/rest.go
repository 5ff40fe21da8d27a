package signaling

import (
	"encoding/json"
	"errors"
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
}

// NewAPI returns the REST and admin API. ids numbers the users the admin
// API creates; revoke is told of a user whose tokens the admin API just
// revoked, to end that user's gateway and voice connections.
func NewAPI(cfg Config, d Deps, ids *snowflake.Generator, revoke func(user guild.ID)) *API {
	cfg.setDefaults()
	d.setDefaults(cfg)
	return &API{cfg: cfg, router: d.Router, store: d.Store, signer: d.Signer, tokens: tokens{d.Signer, d.Store},
		metrics: d.Metrics, limits: newLimiter(), ids: ids, revoke: revoke}
}

// register adds the API's routes to mux.
func (a *API) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/{ver}/gateway", a.public(a.getGateway))
	a.route(mux, "GET /api/{ver}/gateway/bot", "gateway", a.getGatewayBot)
	a.route(mux, "GET /api/{ver}/users/@me", "users/@me", a.getMe)
	a.route(mux, "GET /api/{ver}/oauth2/applications/@me", "applications/@me", a.getApplication)
	a.route(mux, "GET /api/{ver}/channels/{channel}", "channels", a.getChannel)
	a.route(mux, "POST /api/{ver}/channels/{channel}/messages", "messages:post", a.postMessage)
	a.route(mux, "GET /api/{ver}/channels/{channel}/messages", "messages:list", a.listMessages)
	a.route(mux, "GET /api/{ver}/channels/{channel}/messages/{message}", "messages:get", a.getMessage)
	a.route(mux, "PATCH /api/{ver}/channels/{channel}/messages/{message}", "messages:patch", a.patchMessage)
	a.route(mux, "DELETE /api/{ver}/channels/{channel}/messages/{message}", "messages:delete", a.deleteMessage)
	a.route(mux, "POST /api/{ver}/channels/{channel}/typing", "typing", a.postTyping)
	a.route(mux, "GET /api/{ver}/guilds/{guild}", "guilds", a.getGuild)
	a.route(mux, "GET /api/{ver}/guilds/{guild}/channels", "guilds/channels", a.getGuildChannels)
	a.route(mux, "GET /api/{ver}/guilds/{guild}/members", "guilds/members", a.getGuildMembers)
	a.route(mux, "PATCH /api/{ver}/guilds/{guild}/members/{user}", "guilds/members:patch", a.patchGuildMember)
	a.route(mux, "PATCH /api/{ver}/guilds/{guild}/members/@me", "guilds/members:patch", a.patchMemberMe)
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

func (a *API) getChannel(w http.ResponseWriter, r *http.Request, u store.User) error {
	ch, err := pathID(r, "channel")
	if err != nil {
		return err
	}
	c, err := a.router.Channel(r.Context(), ch, u.ID)
	if err != nil {
		return err
	}
	writeJSON(w, 200, c)
	return nil
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

func (a *API) postMessage(w http.ResponseWriter, r *http.Request, u store.User) error {
	ch, err := pathID(r, "channel")
	if err != nil {
		return err
	}
	var p messageParams
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	if string(p.Nonce) == "null" {
		p.Nonce = nil
	}
	m, err := a.router.CreateMessage(r.Context(), guild.CreateMessage{ChannelID: ch, AuthorID: u.ID,
		Content: p.Content, Nonce: p.Nonce, EnforceNonce: p.EnforceNonce, TTS: p.TTS})
	if err != nil {
		return err
	}
	writeJSON(w, 200, m)
	return nil
}

func (a *API) listMessages(w http.ResponseWriter, r *http.Request, u store.User) error {
	ch, err := pathID(r, "channel")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	page := store.Page{Limit: 50}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			return guild.InvalidForm("limit", "NUMBER_TYPE_MAX", "int value should be between 1 and 100.")
		}
		page.Limit = n
	}
	anchors := 0
	for name, dst := range map[string]*snowflake.ID{"before": &page.Before, "after": &page.After, "around": &page.Around} {
		if v := q.Get(name); v != "" {
			id, err := snowflake.Parse(v)
			if err != nil {
				return guild.InvalidForm(name, "NUMBER_TYPE_COERCE", "Value is not snowflake.")
			}
			*dst = id
			anchors++
		}
	}
	if anchors > 1 {
		return guild.InvalidForm("_query", "BASE_TYPE_INVALID", "before, after and around are mutually exclusive.")
	}
	if page.After == 0 && q.Get("after") != "" {
		page.After = 1 // after=0: from the very first message (gateway.md §17)
	}
	ms, err := a.router.ListMessages(r.Context(), ch, u.ID, page)
	if err != nil {
		return err
	}
	writeJSON(w, 200, ms)
	return nil
}

func (a *API) getMessage(w http.ResponseWriter, r *http.Request, u store.User) error {
	ids, err := pathIDs(r, "channel", "message")
	if err != nil {
		return err
	}
	ch, id := ids[0], ids[1]
	m, err := a.router.GetMessage(r.Context(), ch, id, u.ID)
	if err != nil {
		return err
	}
	writeJSON(w, 200, m)
	return nil
}

func (a *API) patchMessage(w http.ResponseWriter, r *http.Request, u store.User) error {
	ids, err := pathIDs(r, "channel", "message")
	if err != nil {
		return err
	}
	ch, id := ids[0], ids[1]
	var p struct {
		Content *string `json:"content"`
	}
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	if p.Content == nil {
		return guild.InvalidForm("content", "BASE_TYPE_REQUIRED", "This field is required.")
	}
	m, err := a.router.EditMessage(r.Context(), ch, id, u.ID, *p.Content)
	if err != nil {
		return err
	}
	writeJSON(w, 200, m)
	return nil
}

func (a *API) deleteMessage(w http.ResponseWriter, r *http.Request, u store.User) error {
	ids, err := pathIDs(r, "channel", "message")
	if err != nil {
		return err
	}
	ch, id := ids[0], ids[1]
	if err := a.router.DeleteMessage(r.Context(), ch, id, u.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) postTyping(w http.ResponseWriter, r *http.Request, u store.User) error {
	ch, err := pathID(r, "channel")
	if err != nil {
		return err
	}
	if err := a.router.Typing(r.Context(), ch, u.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) getGuild(w http.ResponseWriter, r *http.Request, u store.User) error {
	id, err := pathID(r, "guild")
	if err != nil {
		return err
	}
	gd, err := a.router.GetGuild(r.Context(), id, u.ID)
	if err != nil {
		return err
	}
	writeJSON(w, 200, gd)
	return nil
}

func (a *API) getGuildChannels(w http.ResponseWriter, r *http.Request, u store.User) error {
	id, err := pathID(r, "guild")
	if err != nil {
		return err
	}
	cs, err := a.router.Channels(r.Context(), id, u.ID)
	if err != nil {
		return err
	}
	writeJSON(w, 200, cs)
	return nil
}

func (a *API) getGuildMembers(w http.ResponseWriter, r *http.Request, u store.User) error {
	id, err := pathID(r, "guild")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit := 1
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return guild.InvalidForm("limit", "NUMBER_TYPE_MAX", "int value should be between 1 and 1000.")
		}
		limit = n
	}
	var after snowflake.ID
	if v := q.Get("after"); v != "" {
		if after, err = snowflake.Parse(v); err != nil {
			return guild.InvalidForm("after", "NUMBER_TYPE_COERCE", "Value is not snowflake.")
		}
	}
	ms, err := a.router.Members(r.Context(), id, u.ID, after, limit)
	if err != nil {
		return err
	}
	writeJSON(w, 200, ms)
	return nil
}

// patchGuildMember is PATCH /guilds/{id}/members/{user}: server mute,
// deafen and nick, enforced in the SFU at once.
func (a *API) patchGuildMember(w http.ResponseWriter, r *http.Request, u store.User) error {
	ids, err := pathIDs(r, "guild", "user")
	if err != nil {
		return err
	}
	return a.modifyMember(w, r, u, ids[0], ids[1], true)
}

// patchMemberMe is PATCH /guilds/{id}/members/@me: one's own nick.
func (a *API) patchMemberMe(w http.ResponseWriter, r *http.Request, u store.User) error {
	gid, err := pathID(r, "guild")
	if err != nil {
		return err
	}
	return a.modifyMember(w, r, u, gid, u.ID, false)
}

func (a *API) modifyMember(w http.ResponseWriter, r *http.Request, u store.User, gid, uid guild.ID, voice bool) error {
	var p struct {
		Mute *bool           `json:"mute"`
		Deaf *bool           `json:"deaf"`
		Nick json.RawMessage `json:"nick"` // absent: unchanged; null or "": removed
	}
	if err := decodeBody(r, &p); err != nil {
		return err
	}
	if !voice {
		p.Mute, p.Deaf = nil, nil
	}
	var nick *string
	if len(p.Nick) > 0 {
		n := ""
		if string(p.Nick) != "null" && json.Unmarshal(p.Nick, &n) != nil {
			return guild.InvalidForm("nick", "BASE_TYPE_STRING", "Must be a string.")
		}
		nick = &n
	}
	m, err := a.router.ModifyMember(r.Context(), gid, u.ID, uid, p.Mute, p.Deaf, nick)
	if err != nil {
		return err
	}
	writeJSON(w, 200, m)
	return nil
}
