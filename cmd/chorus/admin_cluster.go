package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/chorus-voice/chorus/adminapi"
	"github.com/chorus-voice/chorus/cluster"
)

// clusterView is GET /admin/v1/cluster's answer.
type clusterView struct {
	cluster.Status
	Guild *struct {
		ID    string `json:"id"`
		Owner string `json:"owner"`
	} `json:"guild"`
	VoiceRoom *struct {
		GuildID   string `json:"guild_id"`
		ChannelID string `json:"channel_id"`
		Node      string `json:"node"`
	} `json:"voice_room"`
}

// adminCluster is `chorus admin cluster`: the members as the node asked
// sees them, and where a guild or voice room lives.
func adminCluster(c *adminapi.Client, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	gid := fs.String("guild", "", "also show which node owns this guild")
	channel := fs.String("channel", "", "with --guild: also show which node hosts this voice channel's room")
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *channel != "" && *gid == "" {
		return fmt.Errorf("--channel names a voice room together with --guild")
	}
	q := url.Values{}
	if *gid != "" {
		q.Set("guild", *gid)
	}
	if *channel != "" {
		q.Set("channel", *channel)
	}
	path := "/admin/v1/cluster"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var v clusterView
	if *asJSON {
		var raw any
		if err := c.Do("GET", path, nil, &raw); err != nil {
			return err
		}
		printJSON(raw)
		return nil
	}
	if err := c.Do("GET", path, nil, &v); err != nil {
		return err
	}
	printCluster(out, v)
	return nil
}

func printCluster(out io.Writer, v clusterView) {
	state := ""
	if v.Fenced {
		state = " — FENCED: this node has not renewed its membership and serves no guilds"
	}
	fmt.Fprintf(out, "Cluster as node %s sees it: ring revision %d, %d members%s\n\n", v.Node, v.Revision, len(v.Members), state)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLES\tON RING\tHEARTBEAT\tSESSIONS\tGUILDS\tADDR\tHTTP\tUP")
	for _, m := range v.Members {
		on := "yes"
		if !m.OnRing {
			on = "no"
		}
		up := time.Since(m.Started).Truncate(time.Second)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1fs ago\t%d\t%d\t%s\t%s\t%v\n", m.ID, m.Roles, on,
			float64(m.HeartbeatAgeMS)/1000, m.Load.Sessions, m.Load.Guilds, m.Addr, m.HTTP, up)
	}
	tw.Flush()
	if v.Guild != nil {
		owner := v.Guild.Owner
		if owner == "" {
			owner = "no node (none serves guilds, or this node is fenced)"
		}
		fmt.Fprintf(out, "\nguild %s: owned by %s\n", v.Guild.ID, owner)
	}
	if v.VoiceRoom != nil {
		node := v.VoiceRoom.Node
		if node == "" {
			node = "no node (none has the voice role)"
		}
		fmt.Fprintf(out, "voice room %s/%s: on %s\n", v.VoiceRoom.GuildID, v.VoiceRoom.ChannelID, node)
	}
}
