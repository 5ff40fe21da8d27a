package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/chorus-voice/chorus/adminapi"
)

const adminUsage = `Usage: chorus admin [connection flags] <what> <verb> [flags]

  user create --name NAME [--bot [--privileged-intents LIST]] [--global-name NAME]
  user list
  guild create --name NAME --owner USER
  guild list
  channel create --guild ID --name NAME [--type text|voice|category] [--parent ID] [--user-limit N]
  role create --guild ID --name NAME [--permissions BITS]
  member add --guild ID --user USER [--roles ID,ID] [--nick NICK]
  member remove --guild ID --user USER
  cluster [--guild ID [--channel ID]] [--json]
                   the members (roles, addresses, load, heartbeat age),
                   the ring revision, and which node owns a guild or
                   hosts a voice room
  node drain ID    stop node ID gracefully, as SIGTERM does: its gateway
                   sessions resume at other nodes (op 7), its guilds and
                   voice rooms move, and the process exits 0

USER is a user id or a username. The admin API of a running node is used;
its token is read from <data>/admin.token unless --admin-token is given.

Connection flags:
`

func connectionFlags(fs *flag.FlagSet) (server, token, data *string) {
	server = fs.String("server", "http://127.0.0.1:8080", "base URL of the node")
	token = fs.String("admin-token", "", "admin token (default: read from <data>/admin.token)")
	data = fs.String("data", "data", "data directory of the node, for its admin token")
	return
}

func newAdminClient(server, token, data string) (*adminapi.Client, error) {
	tok, err := adminapi.TokenOr(token, data)
	if err != nil {
		return nil, err
	}
	return adminapi.New(server, tok), nil
}

// resolveUser turns a username or an id into an id.
func resolveUser(c *adminapi.Client, s string) (string, error) {
	if _, err := strconv.ParseUint(s, 10, 64); err == nil {
		return s, nil
	}
	var users []struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	}
	if err := c.Do("GET", "/admin/v1/users", nil, &users); err != nil {
		return "", err
	}
	for _, u := range users {
		if u.Username == s {
			return u.ID, nil
		}
	}
	return "", fmt.Errorf("no user named %q", s)
}

func printJSON(v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Println(string(b))
}

func admin(args []string) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), adminUsage); fs.PrintDefaults() }
	server, tok, data := connectionFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) >= 1 && rest[0] == "cluster" {
		c, err := newAdminClient(*server, *tok, *data)
		if err != nil {
			return err
		}
		return adminCluster(c, rest[1:], os.Stdout)
	}
	if len(rest) < 2 {
		fs.Usage()
		return errors.New("admin: say what to do, for example: chorus admin user create --name alice")
	}
	c, err := newAdminClient(*server, *tok, *data)
	if err != nil {
		return err
	}
	what, verb, rest := rest[0], rest[1], rest[2:]
	sub := flag.NewFlagSet(what+" "+verb, flag.ContinueOnError)
	var out any
	switch what + " " + verb {
	case "user create":
		name := sub.String("name", "", "username (2-32 characters)")
		global := sub.String("global-name", "", "display name")
		bot := sub.Bool("bot", false, "create a bot user")
		privileged := sub.String("privileged-intents", "all", `the privileged intents a bot may use: "all", "none" or a comma-separated list of presences, guild_members, message_content`)
		if err := sub.Parse(rest); err != nil {
			return err
		}
		body := map[string]any{"username": *name, "global_name": *global, "bot": *bot}
		switch *privileged {
		case "all":
		case "none":
			body["privileged_intents"] = false
		default:
			body["privileged_intents"] = strings.Split(*privileged, ",")
		}
		err = c.Do("POST", "/admin/v1/users", body, &out)
	case "user list":
		err = c.Do("GET", "/admin/v1/users", nil, &out)
	case "guild create":
		name := sub.String("name", "", "guild name")
		owner := sub.String("owner", "", "owner (user id or username)")
		if err := sub.Parse(rest); err != nil {
			return err
		}
		id, err := resolveUser(c, *owner)
		if err != nil {
			return err
		}
		err = c.Do("POST", "/admin/v1/guilds", map[string]any{"name": *name, "owner_id": id}, &out)
		if err != nil {
			return err
		}
	case "guild list":
		err = c.Do("GET", "/admin/v1/guilds", nil, &out)
	case "channel create":
		gid := sub.String("guild", "", "guild id")
		name := sub.String("name", "", "channel name")
		typ := sub.String("type", "text", "text, voice or category")
		parent := sub.String("parent", "", "category id")
		limit := sub.Int("user-limit", 0, "voice channel user limit (0 = none)")
		if err := sub.Parse(rest); err != nil {
			return err
		}
		types := map[string]int{"text": 0, "voice": 2, "category": 4}
		t, ok := types[*typ]
		if !ok {
			return fmt.Errorf("--type must be text, voice or category, not %q", *typ)
		}
		body := map[string]any{"name": *name, "type": t, "user_limit": *limit}
		if *parent != "" {
			body["parent_id"] = *parent
		}
		err = c.Do("POST", "/admin/v1/guilds/"+*gid+"/channels", body, &out)
	case "role create":
		gid := sub.String("guild", "", "guild id")
		name := sub.String("name", "", "role name")
		perms := sub.String("permissions", "0", "permission bits (decimal)")
		if err := sub.Parse(rest); err != nil {
			return err
		}
		err = c.Do("POST", "/admin/v1/guilds/"+*gid+"/roles", map[string]any{"name": *name, "permissions": *perms}, &out)
	case "member add":
		gid := sub.String("guild", "", "guild id")
		user := sub.String("user", "", "user id or username")
		roles := sub.String("roles", "", "comma-separated role ids")
		nick := sub.String("nick", "", "nickname")
		if err := sub.Parse(rest); err != nil {
			return err
		}
		id, err := resolveUser(c, *user)
		if err != nil {
			return err
		}
		rs := []string{}
		for _, r := range strings.Split(*roles, ",") {
			if r = strings.TrimSpace(r); r != "" {
				rs = append(rs, r)
			}
		}
		err = c.Do("PUT", "/admin/v1/guilds/"+*gid+"/members/"+id, map[string]any{"roles": rs, "nick": *nick}, &out)
		if err != nil {
			return err
		}
	case "member remove":
		gid := sub.String("guild", "", "guild id")
		user := sub.String("user", "", "user id or username")
		if err := sub.Parse(rest); err != nil {
			return err
		}
		id, err := resolveUser(c, *user)
		if err != nil {
			return err
		}
		err = c.Do("DELETE", "/admin/v1/guilds/"+*gid+"/members/"+id, nil, nil)
		if err != nil {
			return err
		}
		out = map[string]string{"removed": id}
	case "node drain":
		if err := sub.Parse(rest); err != nil {
			return err
		}
		if sub.NArg() != 1 {
			return errors.New("admin: node drain takes the node's id, for example: chorus admin node drain n2")
		}
		err = c.Do("POST", "/admin/v1/cluster/nodes/"+url.PathEscape(sub.Arg(0))+"/drain", nil, &out)
	default:
		fs.Usage()
		return fmt.Errorf("admin: unknown command %q", what+" "+verb)
	}
	if err != nil {
		return err
	}
	printJSON(out)
	return nil
}

func token(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: chorus token --user USER [--revoke] [connection flags]\n\nIssues a new token for a user (id or username) through a running node.\n\n")
		fs.PrintDefaults()
	}
	server, tok, data := connectionFlags(fs)
	user := fs.String("user", "", "user id or username")
	revoke := fs.Bool("revoke", false, "invalidate every earlier token of the user")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" {
		fs.Usage()
		return errors.New("token: --user is required")
	}
	c, err := newAdminClient(*server, *tok, *data)
	if err != nil {
		return err
	}
	id, err := resolveUser(c, *user)
	if err != nil {
		return err
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := c.Do("POST", "/admin/v1/users/"+id+"/token?revoke="+strconv.FormatBool(*revoke), nil, &out); err != nil {
		return err
	}
	fmt.Println(out.Token)
	return nil
}
