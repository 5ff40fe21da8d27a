// Command chorus is the one Chorus binary: it serves, administers and
// load-tests a Chorus deployment.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `chorus - a self-hostable real-time chat and voice backend speaking Discord's
Gateway v10 protocols.

Usage:
  chorus serve [flags]      run a node (embedded store and NATS by default)
  chorus token [flags]      issue a token for a user through a running node
  chorus admin <what> ...   create users, guilds, channels, roles, members
  chorus loadtest <scenario> drive a deployment over the wire and report
  chorus version            print the version

Run "chorus <command> -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "token":
		err = token(args)
	case "admin":
		err = admin(args)
	case "loadtest":
		err = runLoadtest(args)
	case "version", "-version", "--version":
		fmt.Println("chorus", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "chorus: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		// -h printed the command's flags: asking for help is not a failure.
	case err != nil:
		fmt.Fprintln(os.Stderr, "chorus:", err)
		os.Exit(1)
	}
}
