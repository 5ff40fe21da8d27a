package guild

import (
	"context"
	"encoding/json"
	"time"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/ring"
)

// VoiceState is a user's presence in a voice channel (gateway.md §14).
type VoiceState struct {
	UserID    ID
	ChannelID ID
	// SessionID is the gateway session that joined; the voice gateway's
	// Identify must present it.
	SessionID          string
	SelfMute, SelfDeaf bool
	// at is the voice node the user was last sent to (VOICE_SERVER_UPDATE)
	// or, for an adopted state, the node holding its connection; "" when
	// neither is known. revoice compares it with the ring's placement.
	at string
}

// VoiceUpdate is gateway op 4 from one session (gateway.md §16.2).
type VoiceUpdate struct {
	Node, Session      string
	User               ID
	ChannelID          ID // 0 leaves
	SelfMute, SelfDeaf bool
}

// VoiceChange tells the voice side what changed for a user, so it can
// apply mute and deafen to live media or end a voice connection.
type VoiceChange struct {
	Guild, User ID
	// ChannelID is 0 when the user left voice.
	ChannelID ID
	SessionID string
	// Flags as the SFU needs them.
	Mute, Deaf, SelfMute, SelfDeaf, MaySpeak bool
	// Connected, in VoiceHost.VoiceStates only: the user's voice connection
	// is on the answering node, whose id the router puts in Host.
	Connected bool   `json:",omitempty"`
	Host      string `json:",omitempty"`
	// Sent: Host is the node a retiring owner sent the user to (its voice
	// handover), which outranks where its connection still is.
	Sent bool `json:",omitempty"`
}

type voiceStateObject struct {
	GuildID                 *ID     `json:"guild_id,omitempty"`
	ChannelID               *ID     `json:"channel_id"`
	UserID                  ID      `json:"user_id"`
	Member                  *Member `json:"member,omitempty"`
	SessionID               string  `json:"session_id"`
	Deaf                    bool    `json:"deaf"`
	Mute                    bool    `json:"mute"`
	SelfDeaf                bool    `json:"self_deaf"`
	SelfMute                bool    `json:"self_mute"`
	SelfStream              bool    `json:"self_stream"`
	SelfVideo               bool    `json:"self_video"`
	Suppress                bool    `json:"suppress"`
	RequestToSpeakTimestamp *string `json:"request_to_speak_timestamp"`
}

func (a *actor) voiceObject(v *VoiceState, withGuild bool) voiceStateObject {
	m := a.members[v.UserID]
	o := voiceStateObject{UserID: v.UserID, SessionID: v.SessionID, SelfDeaf: v.SelfDeaf, SelfMute: v.SelfMute}
	if v.ChannelID != 0 {
		ch := v.ChannelID
		o.ChannelID = &ch
	}
	if m != nil {
		o.Mute, o.Deaf = m.Mute, m.Deaf
		mo := a.member(v.UserID)
		o.Member = &mo
	}
	if withGuild {
		g := a.guild.ID
		o.GuildID = &g
	}
	return o
}

// UpdateVoiceState applies op 4: join, move, leave, self mute and deafen.
// The user's own session gets VOICE_STATE_UPDATE first and then, on a
// join or move, VOICE_SERVER_UPDATE (clients.md §3). A join the user may
// not make (no CONNECT, channel full) produces neither, as on Discord.
func (r *Router) UpdateVoiceState(ctx context.Context, guild ID, u VoiceUpdate) error {
	_, err := opUpdateVoiceState.run(ctx, r, guild, updateVoiceStateArgs{guild, u})
	return err
}

type updateVoiceStateArgs struct {
	Guild ID
	U     VoiceUpdate
}

var opUpdateVoiceState = defineOp("update_voice_state", func(r *Router, ctx context.Context, q updateVoiceStateArgs) (none, error) {
	return none{}, r.updateVoiceState(ctx, q.Guild, q.U)
})

// updateVoiceState is UpdateVoiceState on the guild's owner.
func (r *Router) updateVoiceState(ctx context.Context, guild ID, u VoiceUpdate) error {
	return r.call(ctx, guild, func(a *actor) error { a.updateVoice(u); return nil })
}

func (a *actor) updateVoice(u VoiceUpdate) {
	m := a.members[u.User]
	if m == nil {
		return
	}
	old := a.voice[u.User]
	if u.ChannelID == 0 {
		if old == nil {
			return
		}
		delete(a.voice, u.User)
		a.r.log.Debug("voice state ended", "guild", a.guild.ID, "channel", old.ChannelID, "user", u.User, "session", old.SessionID, "by", u.Session)
		left := *old
		left.ChannelID = 0
		a.fanoutVoice(&left)
		a.notifyVoice(&left)
		return
	}
	c := a.channels[u.ChannelID]
	if c == nil || c.Type != ChannelVoice {
		return
	}
	p := a.permissions(u.User, c)
	if p&PermConnect == 0 {
		return
	}
	moving := old == nil || old.ChannelID != c.ID || old.SessionID != u.Session
	if moving && c.UserLimit > 0 && p&PermMoveMembers == 0 && a.voiceCount(c.ID, u.User) >= c.UserLimit {
		return
	}
	v := &VoiceState{UserID: u.User, ChannelID: c.ID, SessionID: u.Session, SelfMute: u.SelfMute, SelfDeaf: u.SelfDeaf}
	a.voice[u.User] = v
	a.fanoutVoice(v)
	// The voice side learns of the state before the user learns where to
	// connect: its Identify finds the state there.
	a.notifyVoice(v)
	if moving {
		a.sendVoiceServer(v, &Sub{Node: u.Node, Session: u.Session})
	}
}

// sendVoiceServer tells a user's session where its voice room is: the
// node the ring places the room on, with a token every voice node admits.
func (a *actor) sendVoiceServer(v *VoiceState, s *Sub) {
	n, ok := a.r.voicePlace(a.guild.ID, v.ChannelID)
	if !ok || n.Addr == "" || a.r.voiceTok == nil {
		return
	}
	a.r.log.Debug("voice server update", "guild", a.guild.ID, "channel", v.ChannelID, "user", v.UserID,
		"session", s.Session, "gateway", s.Node, "from", v.at, "to", n.ID)
	v.at = n.ID
	a.toSub(s, NewEvent(protocol.EventVoiceServerUpdate, struct {
		Token    string `json:"token"`
		GuildID  ID     `json:"guild_id"`
		Endpoint string `json:"endpoint"`
	}{a.r.voiceTok(v.UserID), a.guild.ID, n.Addr}))
}

// replaceVoice, at a change of the ring, has each guild actor send its
// voice participants whose room the ring moved to another node (that
// node died, left, or a new one joined) a new VOICE_SERVER_UPDATE, as
// Discord does on a voice server change: clients reconnect there by
// themselves. The new node knows their states already (every voice node
// hears every change) or asks for them.
func (r *Router) replaceVoice() {
	r.mu.Lock()
	var actors []*actor
	for _, s := range r.slots {
		if a := s.loaded(); a != nil {
			actors = append(actors, a)
		}
	}
	r.mu.Unlock()
	for _, a := range actors {
		// Not waiting for mailbox space: a full mailbox means a guild under
		// load, whose next voice join re-sends (and this is best effort
		// until clients notice a dead node by themselves).
		a.post(context.Background(), func(a *actor) { a.revoice() }, false)
	}
}

// handVoiceWait bounds how long a retiring actor waits for mailbox space
// for its voice handover, and handVoiceTimeout the handover itself.
const (
	handVoiceWait    = 100 * time.Millisecond
	handVoiceTimeout = 2 * time.Second
)

// handVoice runs on an actor whose guild the ring moved to another node,
// as its last work: its participants whose rooms moved hear where to go
// now (it still knows their sessions), and the new owner gets its voice
// states, each with the node its user was sent to. Without it a room
// could fall out of the cluster: in a rolling restart, when the owner
// drains last, the other voice nodes restarted after the joins and never
// heard of the room's states, and the new owner may load the guild only
// after this node has exited.
func (a *actor) handVoice() {
	r := a.r
	r.handMu.Lock()
	a.revoice()
	if len(a.voice) == 0 {
		r.handMu.Unlock()
		return
	}
	chs := make([]VoiceChange, 0, len(a.voice))
	for _, v := range a.voice {
		ch := a.voiceChange(v)
		ch.Host, ch.Sent = v.at, v.at != ""
		chs = append(chs, ch)
	}
	if r.handing == nil {
		r.handing = map[ID][]VoiceChange{}
	}
	r.handing[a.guild.ID] = chs
	r.handMu.Unlock()
	defer func() {
		r.handMu.Lock()
		delete(r.handing, a.guild.ID)
		r.handMu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), handVoiceTimeout)
	defer cancel()
	if _, err := opHandVoice.run(ctx, r, a.guild.ID, handVoiceArgs{a.guild.ID, chs}); err != nil {
		r.log.Warn("voice states not handed to the new owner", "guild", a.guild.ID, "states", len(chs), "err", err)
	}
}

type handVoiceArgs struct {
	Guild  ID
	States []VoiceChange
}

// opHandVoice is defined in init: it refers to the actor machinery that
// refers back to handVoice.
var opHandVoice op[handVoiceArgs, none]

func init() {
	opHandVoice = defineOp("hand_voice", func(r *Router, ctx context.Context, q handVoiceArgs) (none, error) {
		return none{}, r.call(ctx, q.Guild, func(a *actor) error { a.adoptVoice(q.States); return nil })
	})
}

// revoice sends every participant whose room the ring now places on
// another node than the one it was sent to a VOICE_SERVER_UPDATE. It is
// kept per participant, not per room: a participant whose gateway session
// is not registered at this moment (moving between gateway nodes while the
// ring changed) keeps its stale node and hears when it registers again
// (revoiceSession) — a room is never marked done for participants that
// were not told.
func (a *actor) revoice() {
	for _, v := range a.voice {
		if s := a.subs[v.SessionID]; s != nil {
			a.revoiceSession(v, s)
		} else {
			a.r.log.Debug("voice participant not registered: told when it is", "guild", a.guild.ID,
				"channel", v.ChannelID, "user", v.UserID, "session", v.SessionID, "at", v.at)
		}
	}
}

// revoiceSession sends v's session s a VOICE_SERVER_UPDATE if the ring
// places v's room elsewhere than v was sent.
func (a *actor) revoiceSession(v *VoiceState, s *Sub) {
	if n, ok := a.r.voicePlace(a.guild.ID, v.ChannelID); ok && n.ID != v.at {
		a.sendVoiceServer(v, s)
	}
}

func (a *actor) voiceCount(channel, except ID) int {
	n := 0
	for id, v := range a.voice {
		if v.ChannelID == channel && id != except {
			n++
		}
	}
	return n
}

// fanoutVoice sends VOICE_STATE_UPDATE to subscribers with the intent, and
// always to the user's own sessions (gateway.md §15.7).
func (a *actor) fanoutVoice(v *VoiceState) {
	ev := NewEvent(protocol.EventVoiceStateUpdate, a.voiceObject(v, true))
	a.fanout(ev, func(s *Sub) bool { return s.Intents&protocol.IntentGuildVoiceStates != 0 || s.User == v.UserID })
}

func (a *actor) notifyVoice(v *VoiceState) { a.r.voiceChanged(a.voiceChange(v)) }

// voiceChange is what the voice side needs to know of a voice state.
func (a *actor) voiceChange(v *VoiceState) VoiceChange {
	ch := VoiceChange{Guild: a.guild.ID, User: v.UserID, ChannelID: v.ChannelID, SessionID: v.SessionID,
		SelfMute: v.SelfMute, SelfDeaf: v.SelfDeaf}
	if m := a.members[v.UserID]; m != nil {
		ch.Mute, ch.Deaf = m.Mute, m.Deaf
		if c := a.channels[v.ChannelID]; c != nil {
			ch.MaySpeak = a.permissions(v.UserID, c)&PermSpeak != 0
		}
	}
	return ch
}

// VoiceState returns user's voice state in guild as the voice side needs
// it (ChannelID 0: not in voice). A voice node that has not heard of the
// state (it joined the ring after the user joined the room) asks for it.
func (r *Router) VoiceState(ctx context.Context, guild, user ID) (VoiceChange, error) {
	return opVoiceState.run(ctx, r, guild, voiceStateArgs{guild, user})
}

type voiceStateArgs struct{ Guild, User ID }

var opVoiceState = defineOp("voice_state", func(r *Router, ctx context.Context, q voiceStateArgs) (VoiceChange, error) {
	out := VoiceChange{Guild: q.Guild, User: q.User}
	err := r.call(ctx, q.Guild, func(a *actor) error {
		if v := a.voice[q.User]; v != nil {
			out = a.voiceChange(v)
		}
		return nil
	})
	return out, err
})

// voiceChangeEvent names the batch item that carries a VoiceChange to
// another node's voice gateway; it is never a gateway event.
const voiceChangeEvent = "chorus:voice_changed"

// voiceChanged tells every voice node of the ring of ch: this node's voice
// gateway directly, the others in their batches, in order with the events
// that go there.
func (r *Router) voiceChanged(ch VoiceChange) {
	var ev *Event
	for _, n := range r.place.Ring().Nodes() {
		switch {
		case n.Roles&ring.RoleVoice == 0:
		case n.ID == r.place.ID() || r.peers == nil:
			if r.voice != nil {
				r.voice.VoiceChanged(ch)
			}
		default:
			if ev == nil {
				ev = NewEvent(voiceChangeEvent, ch)
			}
			r.out.add(n.ID, ev, nil)
		}
	}
}

// ModifyMember applies a moderator's PATCH /guilds/{id}/members/{user}:
// server mute and deafen (MUTE_MEMBERS, DEAFEN_MEMBERS) and nick. The SFU
// enforces mute and deafen at once (VoiceHost.VoiceChanged).
func (r *Router) ModifyMember(ctx context.Context, guild, actorUser, user ID, mute, deaf *bool, nick *string) (Member, error) {
	return opModifyMember.run(ctx, r, guild, modifyMemberArgs{guild, actorUser, user, mute, deaf, nick})
}

type modifyMemberArgs struct {
	Guild     ID
	ActorUser ID
	User      ID
	Mute      *bool
	Deaf      *bool
	Nick      *string
}

var opModifyMember = defineOp("modify_member", func(r *Router, ctx context.Context, q modifyMemberArgs) (Member, error) {
	return r.modifyMember(ctx, q.Guild, q.ActorUser, q.User, q.Mute, q.Deaf, q.Nick)
})

// modifyMember is ModifyMember on the guild's owner.
func (r *Router) modifyMember(ctx context.Context, guild, actorUser, user ID, mute, deaf *bool, nick *string) (Member, error) {
	if nick != nil && *nick != "" {
		if err := CheckLength("nick", *nick, 1, MaxNick); err != nil {
			return Member{}, err
		}
	}
	var out Member
	err := r.call(ctx, guild, func(a *actor) error {
		m := a.members[user]
		if m == nil {
			return ErrUnknownMember
		}
		if a.members[actorUser] == nil {
			return ErrMissingAccess
		}
		base := BasePermissions(a.guild, a.roles, a.members[actorUser])
		if (mute != nil && base&PermMuteMembers == 0) || (deaf != nil && base&PermDeafenMembers == 0) {
			return ErrMissingPermissions
		}
		// One's own nick needs CHANGE_NICKNAME, anyone else's
		// MANAGE_NICKNAMES (which covers one's own too).
		if nick != nil && base&PermManageNicknames == 0 && (actorUser != user || base&PermChangeNickname == 0) {
			return ErrMissingPermissions
		}
		next := *m
		if mute != nil {
			next.Mute = *mute
		}
		if deaf != nil {
			next.Deaf = *deaf
		}
		if nick != nil {
			next.Nick = *nick
		}
		if err := r.store.PutMember(a.fenced(ctx), next); err != nil {
			return err
		}
		*m = next
		out = a.member(user)
		a.fanout(NewEvent(protocol.EventGuildMemberUpdate, struct {
			Member
			GuildID ID `json:"guild_id"`
		}{out, a.guild.ID}), func(s *Sub) bool { return s.Intents&protocol.IntentGuildMembers != 0 || s.User == user })
		if v := a.voice[user]; v != nil {
			a.fanoutVoice(v)
			a.notifyVoice(v)
		}
		return nil
	})
	return out, err
}

var opVoiceStates = defineOp("voice_states", func(r *Router, _ context.Context, guild ID) ([]VoiceChange, error) {
	return append(r.localVoiceStates(guild), r.handingVoice(guild)...), nil
})

// handingVoice is what this node is handing over of a guild's voice now
// (handVoice), waiting out a revoice that is filling it.
func (r *Router) handingVoice(guild ID) []VoiceChange {
	r.handMu.Lock()
	defer r.handMu.Unlock()
	return r.handing[guild]
}

// localVoiceStates is what this node's voice gateway heard of a guild's
// voice, with this node named as the host of the connections it holds.
func (r *Router) localVoiceStates(guild ID) []VoiceChange {
	if r.voice == nil {
		return nil
	}
	chs := r.voice.VoiceStates(guild)
	for i := range chs {
		if chs[i].Connected {
			chs[i].Host = r.place.ID()
		}
	}
	return chs
}

// voiceStates gathers what the voice nodes heard of a guild's voice
// states, for the owner loading it: voice states live in the actor's
// memory, and when an owner dies the users stay connected at their voice
// nodes, which heard every change. Every voice node is asked, because one
// that joined the ring late has not heard of states made before; they
// agree on what they all heard, so the union is the guild's voice.
func (r *Router) voiceStates(ctx context.Context, guild ID) []VoiceChange {
	all := r.localVoiceStates(guild)
	if r.peers == nil {
		return all
	}
	body, _ := json.Marshal(guild) // a snowflake: cannot fail
	ctx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	var asked int
	answers := make(chan []VoiceChange)
	ask := func(ctx context.Context, node string) {
		asked++
		go func() {
			out, err := r.callNode(ctx, node, callRequest{Op: opVoiceStates.name, Guild: guild, Direct: true, Body: body})
			var got []VoiceChange
			if err == nil {
				json.Unmarshal(out, &got)
			}
			answers <- got
		}()
	}
	view := r.place.Ring()
	prev := r.previousOwner(guild)
	for _, n := range view.Nodes() {
		if n.ID != r.place.ID() && (n.Roles&ring.RoleVoice != 0 || n.ID == prev) {
			ask(ctx, n.ID)
		}
	}
	// The previous owner is asked too, even when it is no voice node (it
	// may be handing its voice over: handingVoice), and when it is leaving
	// the ring (drained), as subscribers asks it: when it is also a voice
	// node, it may be the only one left that heard the joins of its rooms —
	// the other voice nodes hear only what happens after they joined, so in
	// a rolling restart, the last node to go knows the states of rooms
	// nobody else has heard of.
	if prev != "" && !view.Has(prev) {
		pctx, cancel := context.WithTimeout(ctx, previousOwnerWait)
		defer cancel()
		ask(pctx, prev)
	}
	for i := 0; i < asked; i++ {
		all = append(all, <-answers...)
	}
	return all
}

// adoptVoice takes over the voice states a previous owner made, quietly:
// the users have had their VOICE_STATE_UPDATEs. A participant is where
// the answers say its connection is, or else where its room's other
// connections are (it was sent there and is still connecting); a room
// whose connections no live node holds (they were on a node that died
// with the old owner) counts as nowhere, and revoice sends its
// participants to where the ring places it.
func (a *actor) adoptVoice(chs []VoiceChange) {
	room := map[ID]string{}
	// Where a retiring owner sent a user (Sent) outranks where the user's
	// connection still is: two passes, so the order of answers is moot.
	for _, sent := range []bool{false, true} {
		for _, ch := range chs {
			if ch.Sent == sent {
				a.adoptOne(ch, room)
			}
		}
	}
	for _, v := range a.voice {
		if v.at == "" {
			v.at = room[v.ChannelID]
		}
	}
	a.r.log.Debug("voice states adopted", "guild", a.guild.ID, "answers", len(chs), "participants", len(a.voice), "subscribers", len(a.subs))
	a.revoice()
}

// adoptOne takes over one voice state (adoptVoice), noting in room the
// node its room's connections are at.
func (a *actor) adoptOne(ch VoiceChange, room map[ID]string) {
	if ch.Guild != a.guild.ID || ch.ChannelID == 0 || a.members[ch.User] == nil {
		return
	}
	if c := a.channels[ch.ChannelID]; c == nil || c.Type != ChannelVoice {
		return
	}
	v := a.voice[ch.User]
	if v == nil {
		v = &VoiceState{UserID: ch.User, ChannelID: ch.ChannelID, SessionID: ch.SessionID,
			SelfMute: ch.SelfMute, SelfDeaf: ch.SelfDeaf}
		a.voice[ch.User] = v
	}
	if ch.Host != "" && v.ChannelID == ch.ChannelID && v.SessionID == ch.SessionID {
		v.at = ch.Host
		room[v.ChannelID] = ch.Host
	}
}
