package guild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// NonceWindow is how long enforce_nonce finds an earlier message with the
// same nonce ("the past few minutes", gateway.md §18.6).
const NonceWindow = 5 * time.Minute

// CreateMessage is a request to post a message.
type CreateMessage struct {
	ChannelID    ID
	AuthorID     ID
	Content      string
	Nonce        json.RawMessage `json:",omitempty"` // raw JSON string or integer, or nil (omitted between nodes so nil stays nil)
	EnforceNonce bool
	TTS          bool
}

// ValidNonce reports whether a raw JSON nonce is a string of at most 25
// characters or an integer (gateway.md §18.6).
func ValidNonce(n json.RawMessage) bool {
	if len(n) == 0 {
		return true
	}
	if n[0] == '"' {
		var s string
		return json.Unmarshal(n, &s) == nil && utf8.RuneCountInString(s) <= MaxNonceLength
	}
	var i json.Number
	if json.Unmarshal(n, &i) != nil {
		return false
	}
	_, err := i.Int64()
	return err == nil && len(n) <= MaxNonceLength
}

// CreateMessage validates, stores (durably) and fans out a message, and
// returns it. With EnforceNonce a repeat of an earlier nonce returns the
// earlier message and creates nothing.
func (r *Router) CreateMessage(ctx context.Context, req CreateMessage) (Message, error) {
	guild, err := r.GuildOfChannel(ctx, req.ChannelID)
	if err != nil {
		return Message{}, err
	}
	return opCreateMessage.run(ctx, r, guild, req)
}

var opCreateMessage = defineOp("create_message", (*Router).createMessage)

// createMessage is CreateMessage on the guild's owner.
func (r *Router) createMessage(ctx context.Context, req CreateMessage) (Message, error) {
	if req.Content == "" {
		return Message{}, ErrEmptyMessage
	}
	if utf8.RuneCountInString(req.Content) > MaxContent {
		return Message{}, InvalidForm("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
	}
	if !ValidNonce(req.Nonce) {
		return Message{}, InvalidForm("nonce", "BASE_TYPE_MAX_LENGTH", "Must be a string of 25 or fewer characters or an integer.")
	}
	gid, err := r.GuildOfChannel(ctx, req.ChannelID)
	if err != nil {
		return Message{}, err
	}
	var out Message
	err = r.callAsync(ctx, gid, func(a *actor, done func(error)) {
		a.createMessage(ctx, req, func(m Message, err error) {
			out = m
			done(err)
		})
	})
	if err != nil {
		return Message{}, err
	}
	return out, nil
}

// createMessage checks req and queues the message for the group commit;
// reply answers once it is durable, or at once with an error or with the
// earlier message an enforce_nonce repeat refers to.
func (a *actor) createMessage(ctx context.Context, req CreateMessage, reply func(Message, error)) {
	c := a.channels[req.ChannelID]
	if c == nil {
		reply(Message{}, ErrUnknownChannel)
		return
	}
	p := a.permissions(req.AuthorID, c)
	switch {
	case p&PermViewChannel == 0:
		reply(Message{}, ErrMissingAccess)
		return
	case p&PermSendMessages == 0:
		reply(Message{}, ErrMissingPermissions)
		return
	case c.Type != ChannelText && c.Type != ChannelVoice:
		reply(Message{}, ErrNotTextChannel)
		return
	}
	author := a.users[req.AuthorID]
	if req.EnforceNonce && len(req.Nonce) > 0 {
		for _, q := range a.pending {
			if q.write && q.m.ChannelID == c.ID && q.m.AuthorID == req.AuthorID && bytes.Equal(q.m.Nonce, req.Nonce) {
				a.pending = append(a.pending, pendingMessage{obj: q.obj, reply: reply})
				return
			}
		}
		id, err := a.r.store.MessageByNonce(ctx, c.ID, req.AuthorID, req.Nonce, time.Now().Add(-NonceWindow))
		if err == nil {
			m, err := a.r.store.GetMessage(ctx, c.ID, id)
			if err == nil {
				reply(MessageObject(&m, *author), nil)
				return
			}
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			reply(Message{}, err)
			return
		}
	}
	m := store.Message{ID: a.r.ids.Next(), ChannelID: c.ID, GuildID: a.guild.ID, AuthorID: req.AuthorID,
		Content: req.Content, Nonce: req.Nonce, TTS: req.TTS && p&PermSendTTSMessages != 0}
	a.pending = append(a.pending, pendingMessage{m: m, write: true, c: c, obj: MessageObject(&m, *author), reply: reply})
}

// fanoutMessage sends a message event to everyone who can see the channel:
// one encoding with content and, only if someone lacks MESSAGE_CONTENT,
// one without (gateway.md §13).
func (a *actor) fanoutMessage(name string, c *store.Channel, obj Message) {
	gid := a.guild.ID
	obj.GuildID = &gid
	if m := a.members[obj.Author.ID]; m != nil {
		mo := MemberObject(m, nil)
		obj.Member = &mo
	}
	full := NewEvent(name, obj)
	needsContent := func(s *Sub) bool {
		return s.Intents&protocol.IntentMessageContent != 0 || s.User == obj.Author.ID
	}
	a.fanout(full, func(s *Sub) bool { return needsContent(s) && a.canSee(s, protocol.IntentGuildMessages, c) })
	for _, s := range a.subs {
		if !needsContent(s) && a.canSee(s, protocol.IntentGuildMessages, c) {
			obj.Content = ""
			stripped := NewEvent(name, obj)
			a.fanout(stripped, func(s *Sub) bool { return !needsContent(s) && a.canSee(s, protocol.IntentGuildMessages, c) })
			return
		}
	}
}

// EditMessage changes the content of the author's own message.
func (r *Router) EditMessage(ctx context.Context, channel, id, user ID, content string) (Message, error) {
	guild, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return Message{}, err
	}
	return opEditMessage.run(ctx, r, guild, editMessageArgs{channel, id, user, content})
}

type editMessageArgs struct {
	Channel ID
	ID      ID
	User    ID
	Content string
}

var opEditMessage = defineOp("edit_message", func(r *Router, ctx context.Context, q editMessageArgs) (Message, error) {
	return r.editMessage(ctx, q.Channel, q.ID, q.User, q.Content)
})

// editMessage is EditMessage on the guild's owner.
func (r *Router) editMessage(ctx context.Context, channel, id, user ID, content string) (Message, error) {
	if utf8.RuneCountInString(content) > MaxContent {
		return Message{}, InvalidForm("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
	}
	var out Message
	err := r.callChannel(ctx, channel, func(a *actor) error {
		c, _, err := a.viewable(channel, user)
		if err != nil {
			return err
		}
		m, err := a.message(ctx, channel, id)
		if err != nil {
			return err
		}
		if m.AuthorID != user {
			return ErrNotAuthor
		}
		if content == "" {
			return ErrEmptyMessage
		}
		now := time.Now().UTC()
		m.Content, m.EditedAt = content, &now
		if err := r.store.UpdateMessage(a.fenced(ctx), m); err != nil {
			return err
		}
		author := a.users[m.AuthorID]
		if author == nil {
			author = &store.User{ID: m.AuthorID}
		}
		out = MessageObject(&m, *author)
		a.fanoutMessage(protocol.EventMessageUpdate, c, out)
		return nil
	})
	return out, err
}

// DeleteMessage deletes a message; its author or a member with
// MANAGE_MESSAGES may.
func (r *Router) DeleteMessage(ctx context.Context, channel, id, user ID) error {
	guild, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return err
	}
	_, err = opDeleteMessage.run(ctx, r, guild, deleteMessageArgs{channel, id, user})
	return err
}

type deleteMessageArgs struct {
	Channel ID
	ID      ID
	User    ID
}

var opDeleteMessage = defineOp("delete_message", func(r *Router, ctx context.Context, q deleteMessageArgs) (none, error) {
	return none{}, r.deleteMessage(ctx, q.Channel, q.ID, q.User)
})

// deleteMessage is DeleteMessage on the guild's owner.
func (r *Router) deleteMessage(ctx context.Context, channel, id, user ID) error {
	return r.callChannel(ctx, channel, func(a *actor) error {
		c, p, err := a.viewable(channel, user)
		if err != nil {
			return err
		}
		m, err := a.message(ctx, channel, id)
		if err != nil {
			return err
		}
		if m.AuthorID != user && p&PermManageMessages == 0 {
			return ErrMissingPermissions
		}
		if err := r.store.DeleteMessage(a.fenced(ctx), channel, id); err != nil {
			return err
		}
		ev := NewEvent(protocol.EventMessageDelete, struct {
			ID        ID `json:"id"`
			ChannelID ID `json:"channel_id"`
			GuildID   ID `json:"guild_id"`
		}{id, channel, a.guild.ID})
		a.fanout(ev, func(s *Sub) bool { return a.canSee(s, protocol.IntentGuildMessages, c) })
		return nil
	})
}

// ListMessages returns a page of a channel's messages, newest first. Without
// READ_MESSAGE_HISTORY the page is empty (gateway.md §18.7).
func (r *Router) ListMessages(ctx context.Context, channel, user ID, p store.Page) ([]Message, error) {
	guild, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return nil, err
	}
	return opListMessages.run(ctx, r, guild, listMessagesArgs{channel, user, p})
}

type listMessagesArgs struct {
	Channel ID
	User    ID
	P       store.Page
}

var opListMessages = defineOp("list_messages", func(r *Router, ctx context.Context, q listMessagesArgs) ([]Message, error) {
	return r.listMessages(ctx, q.Channel, q.User, q.P)
})

// listMessages is ListMessages on the guild's owner.
func (r *Router) listMessages(ctx context.Context, channel, user ID, p store.Page) ([]Message, error) {
	gid, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return nil, err
	}
	var perms uint64
	err = r.call(ctx, gid, func(a *actor) error {
		c := a.channels[channel]
		if c == nil {
			return ErrUnknownChannel
		}
		perms = a.permissions(user, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if perms&PermViewChannel == 0 {
		return nil, ErrMissingAccess
	}
	out := []Message{}
	if perms&PermReadMessageHistory == 0 {
		return out, nil
	}
	ms, err := r.store.ListMessages(ctx, channel, p)
	if err != nil {
		return nil, err
	}
	authors := map[ID]store.User{}
	for i := range ms {
		u, ok := authors[ms[i].AuthorID]
		if !ok {
			u, err = r.store.GetUser(ctx, ms[i].AuthorID)
			if err != nil {
				u = store.User{ID: ms[i].AuthorID, Username: "Deleted User"}
			}
			authors[u.ID] = u
		}
		out = append(out, MessageObject(&ms[i], u))
	}
	return out, nil
}

// GetMessage returns one message.
func (r *Router) GetMessage(ctx context.Context, channel, id, user ID) (Message, error) {
	ms, err := r.ListMessages(ctx, channel, user, store.Page{Around: id, Limit: 1})
	if err != nil {
		return Message{}, err
	}
	if len(ms) == 0 || ms[0].ID != id {
		return Message{}, ErrUnknownMessage
	}
	return ms[0], nil
}

// Typing fans out TYPING_START for a user in a channel.
func (r *Router) Typing(ctx context.Context, channel, user ID) error {
	guild, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return err
	}
	_, err = opTyping.run(ctx, r, guild, typingArgs{channel, user})
	return err
}

type typingArgs struct {
	Channel ID
	User    ID
}

var opTyping = defineOp("typing", func(r *Router, ctx context.Context, q typingArgs) (none, error) {
	return none{}, r.typing(ctx, q.Channel, q.User)
})

// typing is Typing on the guild's owner.
func (r *Router) typing(ctx context.Context, channel, user ID) error {
	return r.callChannel(ctx, channel, func(a *actor) error {
		c, p, err := a.viewable(channel, user)
		if err != nil {
			return err
		}
		if p&PermSendMessages == 0 {
			return ErrMissingPermissions
		}
		m := a.member(user)
		m.User = nil
		ev := NewEvent(protocol.EventTypingStart, struct {
			ChannelID ID     `json:"channel_id"`
			GuildID   ID     `json:"guild_id"`
			UserID    ID     `json:"user_id"`
			Timestamp int64  `json:"timestamp"`
			Member    Member `json:"member"`
		}{channel, a.guild.ID, user, time.Now().Unix(), m})
		a.fanout(ev, func(s *Sub) bool { return a.canSee(s, protocol.IntentGuildMessageTyping, c) })
		return nil
	})
}

// viewable returns a channel of the guild and the user's permissions in it,
// or the error for a channel that does not exist or that the user cannot see.
func (a *actor) viewable(channel, user ID) (*store.Channel, uint64, error) {
	c := a.channels[channel]
	if c == nil {
		return nil, 0, ErrUnknownChannel
	}
	p := a.permissions(user, c)
	if p&PermViewChannel == 0 {
		return nil, 0, ErrMissingAccess
	}
	return c, p, nil
}

// message loads one message of a channel; a missing one is ErrUnknownMessage.
func (a *actor) message(ctx context.Context, channel, id ID) (store.Message, error) {
	a.flush() // a message accepted earlier is readable
	m, err := a.r.store.GetMessage(ctx, channel, id)
	if errors.Is(err, store.ErrNotFound) {
		return m, ErrUnknownMessage
	}
	return m, err
}

// callChannel runs fn on the actor of the guild that owns channel.
func (r *Router) callChannel(ctx context.Context, channel ID, fn func(a *actor) error) error {
	gid, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return err
	}
	return r.call(ctx, gid, fn)
}
