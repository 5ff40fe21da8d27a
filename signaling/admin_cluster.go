package signaling

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/chorus-voice/chorus/cluster"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// clusterStatus answers GET /admin/v1/cluster (issue 10, "Operators can
// see the cluster"): the members with their roles, addresses, load and
// heartbeat age, the ring revision, and, when asked with ?guild=ID (and
// &channel=ID of one of its voice channels), the node that owns the guild
// and the one that hosts the voice room.
type clusterStatus struct {
	cluster.Status
	Guild     *guildPlace `json:"guild,omitempty"`
	VoiceRoom *voicePlace `json:"voice_room,omitempty"`
}

type guildPlace struct {
	ID    snowflake.ID `json:"id"`
	Owner string       `json:"owner"` // "" while no node serves guilds
}

type voicePlace struct {
	GuildID   snowflake.ID `json:"guild_id"`
	ChannelID snowflake.ID `json:"channel_id"`
	Node      string       `json:"node"`
}

var errNoCluster = errors.New("no cluster membership on this node")

func (a *API) adminCluster(w http.ResponseWriter, r *http.Request) error {
	if a.cluster == nil {
		return errNoCluster
	}
	out := clusterStatus{Status: a.cluster.Status()}
	q := r.URL.Query()
	if q.Has("channel") && !q.Has("guild") {
		return guild.InvalidForm("guild", "BASE_TYPE_REQUIRED", "A voice room is named by guild and channel.")
	}
	if q.Has("guild") {
		gid, err := snowflake.Parse(q.Get("guild"))
		if err != nil {
			return guild.InvalidForm("guild", "NUMBER_TYPE_COERCE", "Value is not snowflake.")
		}
		if _, err := a.store.GetGuild(r.Context(), gid); errors.Is(err, store.ErrNotFound) {
			return guild.ErrUnknownGuild
		} else if err != nil {
			return err
		}
		out.Guild = &guildPlace{ID: gid, Owner: a.router.Owner(gid)}
		if q.Has("channel") {
			cid, err := snowflake.Parse(q.Get("channel"))
			if err != nil {
				return guild.InvalidForm("channel", "NUMBER_TYPE_COERCE", "Value is not snowflake.")
			}
			c, err := a.store.GetChannel(r.Context(), cid)
			if errors.Is(err, store.ErrNotFound) || (err == nil && (c.GuildID != gid || c.Type != guild.ChannelVoice)) {
				return guild.ErrUnknownChannel
			} else if err != nil {
				return err
			}
			out.VoiceRoom = &voicePlace{GuildID: gid, ChannelID: cid, Node: a.router.VoiceNode(gid, cid)}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

var errUnknownNode = errors.New("no such node in the cluster")

// adminDrain answers POST /admin/v1/cluster/nodes/{node}/drain: the node
// stops as on SIGTERM — its gateway sessions move to other nodes (op 7,
// then resume there), its guilds and voice rooms are handed over, and the
// process exits 0. Any node of the cluster takes the request.
func (a *API) adminDrain(w http.ResponseWriter, r *http.Request) error {
	if a.cluster == nil {
		return errNoCluster
	}
	node := r.PathValue("node")
	known := false
	for _, m := range a.cluster.Status().Members {
		known = known || m.ID == node
	}
	if !known {
		return errUnknownNode
	}
	if node == a.cfg.NodeID {
		a.hub.requestDrain()
	} else {
		req, _ := json.Marshal(handoffRequest{Op: "drain"})
		if _, err := a.router.CallGateway(r.Context(), node, req); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"node": node, "draining": true})
	return nil
}
