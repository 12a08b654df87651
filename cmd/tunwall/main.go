// Command tunwall is a userspace firewall gateway: traffic routed into its
// TUN device is judged flow by flow against a policy, and allowed flows are
// relayed from host sockets. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes (the CLI contract).
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// usageError marks errors that exit with code 2 (bad usage or config).
type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "down":
		err = cmdDown(args[1:], stdout)
	case "check":
		err = cmdCheck(args[1:], stdout)
	case "explain":
		err = cmdExplain(args[1:], stdout)
	case "reload":
		err = cmdReload(args[1:], stdout)
	case "flows":
		err = cmdFlows(args[1:], stdout)
	case "denied":
		err = cmdDenied(args[1:], stdout)
	case "stats":
		err = cmdStats(args[1:], stdout)
	case "kill":
		err = cmdKill(args[1:], stdout)
	case "dashboard":
		err = cmdDashboard(args[1:], stdout)
	case "capture":
		err = cmdCapture(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		if err = noArgs("version", args[1:]); err == nil {
			fmt.Fprintln(stdout, versionString())
		}
	case "help", "-h", "-help", "--help":
		text := usage
		if len(args) == 2 {
			if one, ok := commandUsage(args[1]); ok {
				text = one // tunwall help explain
			}
		}
		fmt.Fprint(stdout, text)
	default:
		err = usageError{fmt.Errorf("unknown command %q", args[0])}
	}
	if err == nil {
		return exitOK
	}
	var help helpRequest
	if errors.As(err, &help) {
		text, _ := commandUsage(help.command)
		fmt.Fprint(stdout, text)
		return exitOK
	}
	fmt.Fprintln(stderr, "tunwall:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitRuntime
}

// count is "1 flow", "2 flows": n and the noun, plural unless n is 1.
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

const usage = `usage:
  tunwall run     [-c FILE] [--keep-blocked]     run the gateway (needs CAP_NET_ADMIN)
  tunwall down    [-c FILE]                      remove tunwall's routes, rules and backstop
  tunwall check   -c FILE                        validate a config file
  tunwall reload  [-c FILE|--socket PATH]        make the running tunwall load its config again
  tunwall flows   [-c FILE|--socket PATH] [--json] [--watch]   live flows of the running tunwall
  tunwall denied  [-c FILE|--socket PATH] [--json]             recent refusals, with repeat counts
  tunwall stats   [-c FILE|--socket PATH] [--json]             counters
  tunwall kill    [-c FILE|--socket PATH] ID                   close one live flow
  tunwall dashboard [-c FILE|--socket PATH]                    the dashboard's link, token included
  tunwall capture [-c FILE|--socket PATH] (--denied|--flow ID) -w FILE [--count N] [--max-bytes SIZE]
                                                 pcap of refused packets or of one flow (- for stdout)
  tunwall explain [-c FILE] PROTO SRC DST[:PORT] show the verdict for one flow
                  [--user U] [--app PATH]        ... opened on this machine by U / PATH
                  [--domain NAME]                ... to a destination named NAME
                  [--at TIME]                    ... at TIME (time windows; default now)
  tunwall version

Without -c, run and explain use the embedded default configuration.
Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
`

// commandUsage is the part of usage about one command: its lines and the
// lines that continue them, then the notes after the list. It reports
// false for a name usage does not list.
func commandUsage(command string) (string, bool) {
	list, notes, _ := strings.Cut(usage, "\n\n")
	var b strings.Builder
	in, found := false, false
	for _, line := range strings.Split(list, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "tunwall" {
			in = f[1] == command
			found = found || in
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return "usage:\n" + b.String() + "\n" + notes, found
}
