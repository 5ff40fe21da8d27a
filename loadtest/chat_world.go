package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The chat scenario's world: the users it creates through the admin API,
// their guilds, and what each user received.

type chatUser struct {
	id, token string
	guild     *chatGuild
	node      *chatNode // where its session lives and its sends go
	gw        *GatewayClient
	churning  atomic.Bool // a drop and resume is under way

	mu        sync.Mutex
	seen      map[uint64]bool // message seqs received, live or from history
	recovered map[uint64]bool // those read from history after a re-identify
	lastID    uint64          // newest message received live
}

// receive records message seq (id) arriving live; it reports whether it is
// new. A message already read from history is neither new nor a duplicate.
func (u *chatUser) receive(seq, id uint64) (fresh, duplicate bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.lastID = max(u.lastID, id)
	if u.seen[seq] {
		return false, !u.recovered[seq]
	}
	u.seen[seq] = true
	return true, false
}

// catchUp reads the messages after the newest one u received live from
// its channel's history, as a client does after identifying afresh, and
// returns how many it had not seen.
func (u *chatUser) catchUp(ctx context.Context, hc *http.Client, base string) (int, error) {
	u.mu.Lock()
	after := u.lastID
	u.mu.Unlock()
	n := 0
	for page := 0; page < 10000; page++ {
		msgs, err := historyPage(ctx, hc, base, u.token, u.guild.channel, "after="+strconv.FormatUint(after, 10))
		if err != nil {
			return n, err
		}
		u.mu.Lock()
		for _, m := range msgs {
			id, _ := strconv.ParseUint(m.ID, 10, 64)
			after = max(after, id)
			if _, seq, ok := parseLoad(m.Content); ok && !u.seen[seq] {
				u.seen[seq], u.recovered[seq] = true, true
				n++
			}
		}
		u.mu.Unlock()
		if len(msgs) < 100 {
			return n, nil
		}
	}
	return n, nil
}

// The chat scenario's messages read "lt <sent at, unix ns> <seq>": the
// receiver gets the latency and the message's identity from the content.
func loadContent(seq uint64) string { return fmt.Sprintf("lt %d %d", time.Now().UnixNano(), seq) }

// parseLoad reads content written by loadContent.
func parseLoad(content string) (sentAt int64, seq uint64, ok bool) {
	f := strings.Fields(content)
	if len(f) != 3 || f[0] != "lt" {
		return 0, 0, false
	}
	sentAt, err1 := strconv.ParseInt(f[1], 10, 64)
	seq, err2 := strconv.ParseUint(f[2], 10, 64)
	return sentAt, seq, err1 == nil && err2 == nil
}

// historyMessage is what the load tester reads of a stored message.
type historyMessage struct {
	ID      string `json:"id"`
	Content string `json:"content"`
}

// historyPage reads up to 100 messages of a channel over REST, as a client
// does; query is "before=ID" or "after=ID" (gateway.md §18.7).
func historyPage(ctx context.Context, hc *http.Client, base, token, channel, query string) ([]historyMessage, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/api/v10/channels/"+channel+"/messages?limit=100&"+query, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bot "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("loadtest: reading history of %s: %w", channel, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("loadtest: reading history of %s: %s %s", channel, resp.Status, body)
	}
	var msgs []historyMessage
	if err := json.Unmarshal(body, &msgs); err != nil {
		return nil, fmt.Errorf("loadtest: reading history of %s: %w", channel, err)
	}
	return msgs, nil
}

type chatGuild struct {
	id, channel string
	members     []*chatUser
	huge        bool
}

// guildSizes splits n members over g guilds, guild k (from 1) getting a
// share proportional to 1/k^skew and, members allowing, at least two (a
// guild of one has nobody to deliver to).
func guildSizes(n, g int, skew float64) []int {
	sizes := make([]int, max(g, 0))
	if g <= 0 || n <= 0 {
		return sizes
	}
	floor := min(2, n/g)
	weights, total := make([]float64, g), 0.0
	for k := range weights {
		weights[k] = 1 / math.Pow(float64(k+1), skew)
		total += weights[k]
	}
	left := n - floor*g
	given := 0
	for k := range sizes {
		extra := int(float64(left) * weights[k] / total)
		sizes[k] = floor + extra
		given += extra
	}
	for k := 0; given < left; k = (k + 1) % g { // rounding remainder, largest first
		sizes[k]++
		given++
	}
	return sizes
}
