package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the store a cluster shares (DESIGN.md, "store"). Records are
// kept as JSON documents beside the columns they are looked up or ordered
// by, so the two backends share one encoding and a new field needs no
// migration. Every write is a single statement or transaction, durable when
// it returns (synchronous_commit, PostgreSQL's default).
//
// Snowflakes are stored as bigint: they stay below 2^63 until 2084, so the
// signed order is their order.
type Postgres struct {
	pool *pgxpool.Pool
}

var _ Store = (*Postgres)(nil)

// schema is applied at open; every statement is idempotent.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS users (id bigint PRIMARY KEY, username text NOT NULL UNIQUE, doc jsonb NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS guilds (id bigint PRIMARY KEY, doc jsonb NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS channels (id bigint PRIMARY KEY, guild_id bigint NOT NULL, doc jsonb NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS channels_guild ON channels (guild_id, id)`,
	`CREATE TABLE IF NOT EXISTS roles (guild_id bigint NOT NULL, id bigint NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (guild_id, id))`,
	`CREATE TABLE IF NOT EXISTS members (guild_id bigint NOT NULL, user_id bigint NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (guild_id, user_id))`,
	`CREATE INDEX IF NOT EXISTS members_user ON members (user_id, guild_id)`,
	`CREATE TABLE IF NOT EXISTS messages (channel_id bigint NOT NULL, id bigint NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (channel_id, id))`,
	`CREATE TABLE IF NOT EXISTS nonces (channel_id bigint NOT NULL, author_id bigint NOT NULL, nonce bytea NOT NULL,
		message_id bigint NOT NULL, created_ms bigint NOT NULL, PRIMARY KEY (channel_id, author_id, nonce))`,
	`CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value bytea NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS guild_epochs (guild_id bigint PRIMARY KEY, epoch bigint NOT NULL)`,
	// chorus_fence(guild, epoch) refuses a write made under an epoch older
	// than the guild's newest claim (see batch and fence.go).
	`CREATE OR REPLACE FUNCTION chorus_fence(g bigint, e bigint) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE newest bigint;
	BEGIN
		SELECT epoch INTO newest FROM guild_epochs WHERE guild_id = g FOR SHARE;
		IF newest > e THEN
			RAISE EXCEPTION 'guild % was claimed at epoch %; this write was made at %', g, newest, e USING ERRCODE = 'CHF01';
		END IF;
	END $$`,
}

// DefaultPoolConns is each node's PostgreSQL connection pool size unless
// the URL sets pool_max_conns. PostgreSQL's max_connections (100 by
// default) must cover it on every node.
const DefaultPoolConns = 16

// OpenPostgres connects to dsn (a postgres:// URL or key=value string) and
// creates the tables it needs if they do not exist.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres address: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgxpool's default is the core count (at least 4): on a small
		// machine a burst of identifies, each a few reads, then waits for
		// a connection past its deadline (measured: 100,000 sessions over
		// six nodes at 2,000 identifies/s failed 84% with 4, see
		// docs/benchmarks.md). pool_max_conns in the URL overrides this.
		cfg.MaxConns = DefaultPoolConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	if err := applySchema(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: postgres schema: %w", err)
	}
	return &Postgres{pool: pool}, nil
}

// schemaLock is the advisory lock key under which nodes apply the schema.
const schemaLock = 0x63686f727573 // "chorus"

// applySchema applies schema in one transaction under an advisory lock:
// the nodes of a cluster start together, and concurrent IF NOT EXISTS and
// OR REPLACE statements on the same catalog rows fail ("tuple concurrently
// updated") instead of waiting for each other.
func applySchema(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
			return err
		}
		for _, q := range schema {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
}

// ErrNameTaken is returned when a username belongs to another user.
var ErrNameTaken = errors.New("store: username taken")

func (p *Postgres) exec(ctx context.Context, q string, args ...any) error {
	_, err := p.write(ctx, q, args...)
	return err
}

// write runs one statement that changes records, fenced when ctx carries a
// fence (see batch).
func (p *Postgres) write(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error) {
	if _, ok := fenceOf(ctx); !ok {
		return p.pool.Exec(ctx, q, args...)
	}
	b := &pgx.Batch{}
	b.Queue(q, args...)
	return p.batch(ctx, b)
}

// fenceCheck raises fencedState when a newer owner has claimed the guild.
// Its share lock on the guild's epoch row lasts to the end of the write's
// transaction: Claim's UPDATE of that row waits for it, and a check that
// meets a claim in progress waits for it and then reads the new epoch
// (READ COMMITTED re-reads a row updated concurrently), so a fenced write
// and a newer claim are ordered one way or the other, never interleaved.
const fenceCheck = `SELECT chorus_fence($1, $2)`

// fencedState is the SQLSTATE chorus_fence raises (a class of our own).
const fencedState = "CHF01"

// batch runs b's statements as one implicit transaction, pipelined in one
// round trip (one Sync: PostgreSQL's protocol, "Pipelining"), and returns
// the last one's command tag. Under a fence the epoch check runs first in
// the same pipeline; if it raises, the server skips the rest and rolls the
// transaction back, and batch returns ErrFenced.
//
// The decision is the server's, inside one round trip, on purpose: a check
// made by the client inside an explicit transaction would hold the share
// lock across client round trips, and an owner paused (SIGSTOP) in the
// middle would block its successor's Claim until it woke up.
func (p *Postgres) batch(ctx context.Context, b *pgx.Batch) (pgconn.CommandTag, error) {
	f, fenced := fenceOf(ctx)
	run := b
	if fenced {
		run = &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, 1+len(b.QueuedQueries))}
		run.Queue(fenceCheck, int64(f.guild), int64(f.epoch))
		run.QueuedQueries = append(run.QueuedQueries, b.QueuedQueries...)
	}
	br := p.pool.SendBatch(ctx, run)
	var tag pgconn.CommandTag
	for range run.QueuedQueries {
		t, err := br.Exec()
		if err != nil {
			br.Close()
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == fencedState {
				return tag, ErrFenced
			}
			return tag, err
		}
		tag = t
	}
	return tag, br.Close()
}

// Claim increments the guild's epoch (see fence.go).
func (p *Postgres) Claim(ctx context.Context, guild ID) (uint64, error) {
	var epoch int64
	err := p.pool.QueryRow(ctx, `INSERT INTO guild_epochs (guild_id, epoch) VALUES ($1, 1)
		ON CONFLICT (guild_id) DO UPDATE SET epoch = guild_epochs.epoch + 1 RETURNING epoch`, int64(guild)).Scan(&epoch)
	return uint64(epoch), err
}

// one scans a single JSON document into v, ErrNotFound when there is none.
func (p *Postgres) one(ctx context.Context, v any, q string, args ...any) error {
	var doc []byte
	err := p.pool.QueryRow(ctx, q, args...).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(doc, v)
}

// docs runs a query returning JSON documents and decodes each.
func docs[T any](ctx context.Context, p *Postgres, q string, args ...any) ([]T, error) {
	rows, err := p.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var out []T
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			rows.Close()
			return nil, err
		}
		var t T
		if err := json.Unmarshal(doc, &t); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// deleted maps "no row affected" to ErrNotFound.
func deleted(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

func (p *Postgres) PutUser(ctx context.Context, u User) error {
	doc, err := json.Marshal(u)
	if err != nil {
		return err
	}
	err = p.exec(ctx, `INSERT INTO users (id, username, doc) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET username = excluded.username, doc = excluded.doc`, int64(u.ID), u.Username, doc)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation: the name
		return ErrNameTaken
	}
	return err
}

func (p *Postgres) GetUser(ctx context.Context, id ID) (User, error) {
	var u User
	return u, p.one(ctx, &u, `SELECT doc FROM users WHERE id = $1`, int64(id))
}

func (p *Postgres) UserByName(ctx context.Context, name string) (User, error) {
	var u User
	return u, p.one(ctx, &u, `SELECT doc FROM users WHERE username = $1`, name)
}

func (p *Postgres) ListUsers(ctx context.Context) ([]User, error) {
	return docs[User](ctx, p, `SELECT doc FROM users ORDER BY id`)
}

func (p *Postgres) PutGuild(ctx context.Context, g Guild) error {
	doc, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return p.exec(ctx, `INSERT INTO guilds (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc`, int64(g.ID), doc)
}

func (p *Postgres) GetGuild(ctx context.Context, id ID) (Guild, error) {
	var g Guild
	return g, p.one(ctx, &g, `SELECT doc FROM guilds WHERE id = $1`, int64(id))
}

func (p *Postgres) ListGuilds(ctx context.Context) ([]Guild, error) {
	return docs[Guild](ctx, p, `SELECT doc FROM guilds ORDER BY id`)
}

func (p *Postgres) PutChannel(ctx context.Context, c Channel) error {
	doc, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return p.exec(ctx, `INSERT INTO channels (id, guild_id, doc) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET guild_id = excluded.guild_id, doc = excluded.doc`, int64(c.ID), int64(c.GuildID), doc)
}

func (p *Postgres) GetChannel(ctx context.Context, id ID) (Channel, error) {
	var c Channel
	return c, p.one(ctx, &c, `SELECT doc FROM channels WHERE id = $1`, int64(id))
}

func (p *Postgres) DeleteChannel(ctx context.Context, id ID) error {
	return deleted(p.write(ctx, `DELETE FROM channels WHERE id = $1`, int64(id)))
}

func (p *Postgres) ListChannels(ctx context.Context, guild ID) ([]Channel, error) {
	return docs[Channel](ctx, p, `SELECT doc FROM channels WHERE guild_id = $1 ORDER BY id`, int64(guild))
}

func (p *Postgres) PutRole(ctx context.Context, r Role) error {
	doc, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return p.exec(ctx, `INSERT INTO roles (guild_id, id, doc) VALUES ($1, $2, $3)
		ON CONFLICT (guild_id, id) DO UPDATE SET doc = excluded.doc`, int64(r.GuildID), int64(r.ID), doc)
}

// DeleteRole deletes a role; deleting one that does not exist is not an
// error, as in the embedded store.
func (p *Postgres) DeleteRole(ctx context.Context, guild, id ID) error {
	return p.exec(ctx, `DELETE FROM roles WHERE guild_id = $1 AND id = $2`, int64(guild), int64(id))
}

func (p *Postgres) ListRoles(ctx context.Context, guild ID) ([]Role, error) {
	return docs[Role](ctx, p, `SELECT doc FROM roles WHERE guild_id = $1 ORDER BY id`, int64(guild))
}

func (p *Postgres) PutMember(ctx context.Context, m Member) error {
	doc, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return p.exec(ctx, `INSERT INTO members (guild_id, user_id, doc) VALUES ($1, $2, $3)
		ON CONFLICT (guild_id, user_id) DO UPDATE SET doc = excluded.doc`, int64(m.GuildID), int64(m.UserID), doc)
}

func (p *Postgres) GetMember(ctx context.Context, guild, user ID) (Member, error) {
	var m Member
	return m, p.one(ctx, &m, `SELECT doc FROM members WHERE guild_id = $1 AND user_id = $2`, int64(guild), int64(user))
}

// DeleteMember deletes a membership; a missing one is not an error, as in
// the embedded store.
func (p *Postgres) DeleteMember(ctx context.Context, guild, user ID) error {
	return p.exec(ctx, `DELETE FROM members WHERE guild_id = $1 AND user_id = $2`, int64(guild), int64(user))
}

func (p *Postgres) ListMembers(ctx context.Context, guild ID) ([]Member, error) {
	return docs[Member](ctx, p, `SELECT doc FROM members WHERE guild_id = $1 ORDER BY user_id`, int64(guild))
}

func (p *Postgres) UserGuilds(ctx context.Context, user ID) ([]ID, error) {
	rows, err := p.pool.Query(ctx, `SELECT guild_id FROM members WHERE user_id = $1 ORDER BY guild_id`, int64(user))
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	out := make([]ID, len(ids))
	for i, id := range ids {
		out[i] = ID(id)
	}
	return out, nil
}

// CreateMessages writes the messages and their nonce records in one
// transaction, pipelined in one round trip. A nonce already recorded for
// (channel, author) is replaced, as in the embedded store: the newest
// message owns it.
func (p *Postgres) CreateMessages(ctx context.Context, ms ...Message) error {
	if len(ms) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, m := range ms {
		doc, err := json.Marshal(m)
		if err != nil {
			return err
		}
		b.Queue(`INSERT INTO messages (channel_id, id, doc) VALUES ($1, $2, $3)`, int64(m.ChannelID), int64(m.ID), doc)
		if len(m.Nonce) > 0 {
			b.Queue(`INSERT INTO nonces (channel_id, author_id, nonce, message_id, created_ms) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (channel_id, author_id, nonce) DO UPDATE SET message_id = excluded.message_id, created_ms = excluded.created_ms`,
				int64(m.ChannelID), int64(m.AuthorID), []byte(m.Nonce), int64(m.ID), m.ID.Time().UnixMilli())
		}
	}
	_, err := p.batch(ctx, b)
	return err
}

func (p *Postgres) MessageByNonce(ctx context.Context, channel, author ID, nonce []byte, since time.Time) (ID, error) {
	var id int64
	err := p.pool.QueryRow(ctx, `SELECT message_id FROM nonces WHERE channel_id = $1 AND author_id = $2 AND nonce = $3 AND created_ms >= $4`,
		int64(channel), int64(author), nonce, since.UnixMilli()).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	return ID(id), err
}

func (p *Postgres) GetMessage(ctx context.Context, channel, id ID) (Message, error) {
	var m Message
	return m, p.one(ctx, &m, `SELECT doc FROM messages WHERE channel_id = $1 AND id = $2`, int64(channel), int64(id))
}

func (p *Postgres) UpdateMessage(ctx context.Context, m Message) error {
	doc, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return deleted(p.write(ctx, `UPDATE messages SET doc = $3 WHERE channel_id = $1 AND id = $2`, int64(m.ChannelID), int64(m.ID), doc))
}

func (p *Postgres) DeleteMessage(ctx context.Context, channel, id ID) error {
	return deleted(p.write(ctx, `DELETE FROM messages WHERE channel_id = $1 AND id = $2`, int64(channel), int64(id)))
}

// ListMessages pages a channel's messages newest first, with Discord's
// before/after/around semantics (gateway.md §18.7), as the embedded store.
func (p *Postgres) ListMessages(ctx context.Context, channel ID, pg Page) ([]Message, error) {
	pg = pg.Clamped()
	limit := pg.Limit
	if limit <= 0 || limit > maxPageLimit {
		return nil, fmt.Errorf("store: limit %d out of range", limit)
	}
	ch := int64(channel)
	switch {
	case pg.After != 0:
		// The limit messages immediately newer than After.
		return docs[Message](ctx, p, `SELECT doc FROM (SELECT id, doc FROM messages WHERE channel_id = $1 AND id > $2
			ORDER BY id LIMIT $3) m ORDER BY id DESC`, ch, int64(pg.After), limit)
	case pg.Around != 0:
		// Half newer, then older ones including Around itself.
		return docs[Message](ctx, p, `SELECT doc FROM (
			(SELECT id, doc FROM messages WHERE channel_id = $1 AND id > $2 ORDER BY id LIMIT $3)
			UNION ALL
			(SELECT id, doc FROM messages WHERE channel_id = $1 AND id <= $2 ORDER BY id DESC LIMIT $4)
		) m ORDER BY id DESC LIMIT $4`, ch, int64(pg.Around), limit/2, limit)
	case pg.Before != 0:
		return docs[Message](ctx, p, `SELECT doc FROM messages WHERE channel_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`,
			ch, int64(pg.Before), limit)
	default:
		return docs[Message](ctx, p, `SELECT doc FROM messages WHERE channel_id = $1 ORDER BY id DESC LIMIT $2`, ch, limit)
	}
}

func (p *Postgres) GetMeta(ctx context.Context, k string) ([]byte, error) {
	var v []byte
	err := p.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, k).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return v, err
}

func (p *Postgres) PutMeta(ctx context.Context, k string, v []byte) error {
	return p.exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, k, v)
}

func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}
