package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
)

// Key layout. Ids are big-endian so that prefix scans come out in id order,
// which for snowflakes is creation order.
//
//	u<user>              user         U<name>          user id by name
//	g<guild>             guild        c<channel>       channel
//	C<guild><channel>    index        r<guild><role>   role
//	m<guild><user>       member       M<user><guild>   index
//	x<channel><message>  message
//	n<channel><author><nonce>  message id + created unix ms
//	k<name>              meta
const (
	pUser        = 'u'
	pUserName    = 'U'
	pGuild       = 'g'
	pChannel     = 'c'
	pGuildChan   = 'C'
	pRole        = 'r'
	pMember      = 'm'
	pUserGuild   = 'M'
	pMessage     = 'x'
	pNonce       = 'n'
	pMeta        = 'k'
	maxPageLimit = 100
)

// Pebble is the embedded single-node backend.
type Pebble struct {
	db *pebble.DB

	// fenceMu orders fenced writes (read lock, held through the write)
	// against claims (write lock). Epochs live in memory: an embedded store
	// belongs to one process, whose actors all end with it.
	fenceMu sync.RWMutex
	epochs  map[ID]uint64
}

// OpenPebble opens (or creates) a store in dir.
func OpenPebble(dir string) (*Pebble, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	return &Pebble{db: db, epochs: map[ID]uint64{}}, nil
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// Claim increments the guild's epoch (see fence.go).
func (p *Pebble) Claim(_ context.Context, guild ID) (uint64, error) {
	p.fenceMu.Lock()
	defer p.fenceMu.Unlock()
	p.epochs[guild]++
	return p.epochs[guild], nil
}

// fenced checks ctx's fence and returns the function that ends the write
// it guards; a claim waits until then.
func (p *Pebble) fenced(ctx context.Context) (func(), error) {
	f, ok := fenceOf(ctx)
	if !ok {
		return func() {}, nil
	}
	p.fenceMu.RLock()
	if p.epochs[f.guild] > f.epoch {
		p.fenceMu.RUnlock()
		return nil, ErrFenced
	}
	return p.fenceMu.RUnlock, nil
}

func key(prefix byte, ids ...ID) []byte {
	k := make([]byte, 1, 1+8*len(ids))
	k[0] = prefix
	for _, id := range ids {
		k = binary.BigEndian.AppendUint64(k, uint64(id))
	}
	return k
}

func (p *Pebble) get(k []byte, v any) error {
	b, closer, err := p.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	return json.Unmarshal(b, v)
}

func (p *Pebble) put(k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return p.db.Set(k, b, pebble.Sync)
}

// scan calls fn for every key with the prefix, in key order.
func (p *Pebble) scan(prefix []byte, fn func(k, v []byte) error) error {
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

func scanJSON[T any](p *Pebble, prefix []byte) ([]T, error) {
	var out []T
	err := p.scan(prefix, func(_, v []byte) error {
		var t T
		if err := json.Unmarshal(v, &t); err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

func (p *Pebble) PutUser(_ context.Context, u User) error {
	b := p.db.NewBatch()
	defer b.Close()
	var old User
	if err := p.get(key(pUser, u.ID), &old); err == nil && old.Username != u.Username {
		_ = b.Delete(append([]byte{pUserName}, old.Username...), nil)
	}
	v, err := json.Marshal(u)
	if err != nil {
		return err
	}
	_ = b.Set(key(pUser, u.ID), v, nil)
	_ = b.Set(append([]byte{pUserName}, u.Username...), binary.BigEndian.AppendUint64(nil, uint64(u.ID)), nil)
	return b.Commit(pebble.Sync)
}

func (p *Pebble) GetUser(_ context.Context, id ID) (User, error) {
	var u User
	return u, p.get(key(pUser, id), &u)
}

func (p *Pebble) UserByName(ctx context.Context, name string) (User, error) {
	b, closer, err := p.db.Get(append([]byte{pUserName}, name...))
	if errors.Is(err, pebble.ErrNotFound) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, err
	}
	id := ID(binary.BigEndian.Uint64(b))
	closer.Close()
	return p.GetUser(ctx, id)
}

func (p *Pebble) ListUsers(context.Context) ([]User, error) {
	return scanJSON[User](p, []byte{pUser})
}

func (p *Pebble) PutGuild(ctx context.Context, g Guild) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	return p.put(key(pGuild, g.ID), g)
}

func (p *Pebble) GetGuild(_ context.Context, id ID) (Guild, error) {
	var g Guild
	return g, p.get(key(pGuild, id), &g)
}

func (p *Pebble) ListGuilds(context.Context) ([]Guild, error) {
	return scanJSON[Guild](p, []byte{pGuild})
}

func (p *Pebble) PutChannel(ctx context.Context, c Channel) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	b := p.db.NewBatch()
	defer b.Close()
	_ = b.Set(key(pChannel, c.ID), v, nil)
	_ = b.Set(key(pGuildChan, c.GuildID, c.ID), nil, nil)
	return b.Commit(pebble.Sync)
}

func (p *Pebble) GetChannel(_ context.Context, id ID) (Channel, error) {
	var c Channel
	return c, p.get(key(pChannel, id), &c)
}

func (p *Pebble) DeleteChannel(ctx context.Context, id ID) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	c, err := p.GetChannel(ctx, id)
	if err != nil {
		return err
	}
	b := p.db.NewBatch()
	defer b.Close()
	_ = b.Delete(key(pChannel, id), nil)
	_ = b.Delete(key(pGuildChan, c.GuildID, id), nil)
	return b.Commit(pebble.Sync)
}

func (p *Pebble) ListChannels(ctx context.Context, guild ID) ([]Channel, error) {
	var out []Channel
	err := p.scan(key(pGuildChan, guild), func(k, _ []byte) error {
		c, err := p.GetChannel(ctx, ID(binary.BigEndian.Uint64(k[9:])))
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

func (p *Pebble) PutRole(ctx context.Context, r Role) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	return p.put(key(pRole, r.GuildID, r.ID), r)
}

func (p *Pebble) DeleteRole(ctx context.Context, guild, id ID) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	return p.db.Delete(key(pRole, guild, id), pebble.Sync)
}

func (p *Pebble) ListRoles(_ context.Context, guild ID) ([]Role, error) {
	return scanJSON[Role](p, key(pRole, guild))
}

func (p *Pebble) PutMember(ctx context.Context, m Member) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	b := p.db.NewBatch()
	defer b.Close()
	_ = b.Set(key(pMember, m.GuildID, m.UserID), v, nil)
	_ = b.Set(key(pUserGuild, m.UserID, m.GuildID), nil, nil)
	return b.Commit(pebble.Sync)
}

func (p *Pebble) GetMember(_ context.Context, guild, user ID) (Member, error) {
	var m Member
	return m, p.get(key(pMember, guild, user), &m)
}

func (p *Pebble) DeleteMember(ctx context.Context, guild, user ID) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	b := p.db.NewBatch()
	defer b.Close()
	_ = b.Delete(key(pMember, guild, user), nil)
	_ = b.Delete(key(pUserGuild, user, guild), nil)
	return b.Commit(pebble.Sync)
}

func (p *Pebble) ListMembers(_ context.Context, guild ID) ([]Member, error) {
	return scanJSON[Member](p, key(pMember, guild))
}

func (p *Pebble) UserGuilds(_ context.Context, user ID) ([]ID, error) {
	var out []ID
	err := p.scan(key(pUserGuild, user), func(k, _ []byte) error {
		out = append(out, ID(binary.BigEndian.Uint64(k[9:])))
		return nil
	})
	return out, err
}

func nonceKey(channel, author ID, nonce []byte) []byte {
	return append(key(pNonce, channel, author), nonce...)
}

func (p *Pebble) CreateMessages(ctx context.Context, ms ...Message) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	b := p.db.NewBatch()
	defer b.Close()
	for _, m := range ms {
		v, err := json.Marshal(m)
		if err != nil {
			return err
		}
		_ = b.Set(key(pMessage, m.ChannelID, m.ID), v, nil)
		if len(m.Nonce) > 0 {
			rec := binary.BigEndian.AppendUint64(nil, uint64(m.ID))
			rec = binary.BigEndian.AppendUint64(rec, uint64(m.ID.Time().UnixMilli()))
			_ = b.Set(nonceKey(m.ChannelID, m.AuthorID, m.Nonce), rec, nil)
		}
	}
	return b.Commit(pebble.Sync)
}

func (p *Pebble) MessageByNonce(_ context.Context, channel, author ID, nonce []byte, since time.Time) (ID, error) {
	v, closer, err := p.db.Get(nonceKey(channel, author, nonce))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 16 {
		return 0, fmt.Errorf("store: corrupt nonce record")
	}
	if int64(binary.BigEndian.Uint64(v[8:])) < since.UnixMilli() {
		return 0, ErrNotFound
	}
	return ID(binary.BigEndian.Uint64(v)), nil
}

func (p *Pebble) GetMessage(_ context.Context, channel, id ID) (Message, error) {
	var m Message
	return m, p.get(key(pMessage, channel, id), &m)
}

func (p *Pebble) UpdateMessage(ctx context.Context, m Message) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := p.GetMessage(ctx, m.ChannelID, m.ID); err != nil {
		return err
	}
	return p.put(key(pMessage, m.ChannelID, m.ID), m)
}

func (p *Pebble) DeleteMessage(ctx context.Context, channel, id ID) error {
	done, err := p.fenced(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := p.GetMessage(ctx, channel, id); err != nil {
		return err
	}
	return p.db.Delete(key(pMessage, channel, id), pebble.Sync)
}

func (p *Pebble) ListMessages(_ context.Context, channel ID, pg Page) ([]Message, error) {
	pg = pg.Clamped()
	limit := pg.Limit
	if limit <= 0 || limit > maxPageLimit {
		return nil, fmt.Errorf("store: limit %d out of range", limit)
	}
	prefix := key(pMessage, channel)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Message
	decode := func() error {
		var m Message
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			return err
		}
		out = append(out, m)
		return nil
	}
	switch {
	case pg.After != 0:
		// The limit messages immediately newer than After, returned newest first.
		for ok := it.SeekGE(key(pMessage, channel, pg.After+1)); ok && len(out) < limit; ok = it.Next() {
			if err := decode(); err != nil {
				return nil, err
			}
		}
		reverse(out)
	case pg.Around != 0:
		// Half older (including Around itself), half newer, like Discord.
		newer := limit / 2
		var after []Message
		for ok := it.SeekGE(key(pMessage, channel, pg.Around+1)); ok && len(after) < newer; ok = it.Next() {
			var m Message
			if err := json.Unmarshal(it.Value(), &m); err != nil {
				return nil, err
			}
			after = append(after, m)
		}
		reverse(after)
		out = append(out, after...)
		for ok := it.SeekLT(key(pMessage, channel, pg.Around+1)); ok && len(out) < limit; ok = it.Prev() {
			if err := decode(); err != nil {
				return nil, err
			}
		}
	default:
		var ok bool
		if pg.Before != 0 {
			ok = it.SeekLT(key(pMessage, channel, pg.Before))
		} else {
			ok = it.Last()
		}
		for ; ok && len(out) < limit; ok = it.Prev() {
			if err := decode(); err != nil {
				return nil, err
			}
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	return out, nil
}

func reverse(ms []Message) {
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
}

func (p *Pebble) GetMeta(_ context.Context, k string) ([]byte, error) {
	v, closer, err := p.db.Get(append([]byte{pMeta}, k...))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

func (p *Pebble) PutMeta(_ context.Context, k string, v []byte) error {
	return p.db.Set(append([]byte{pMeta}, k...), v, pebble.Sync)
}

func (p *Pebble) Close() error { return p.db.Close() }
