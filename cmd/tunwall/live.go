package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tunwall/tunwall/internal/control"
	"github.com/tunwall/tunwall/tun"
)

// liveFlags parses the flags of the commands that talk to a running
// tunwall, has check judge the arguments and the flags' values, and then
// returns the API client: a command line that is wrong is told so whether
// or not a tunwall runs.
func liveFlags(name string, args []string, check func(rest []string) error, more ...flagDef) (*control.Client, error) {
	var socket string
	path, rest, err := flags(name, args, false, append(more, stringFlag{"socket", &socket})...)
	if err != nil {
		return nil, err
	}
	if err := check(rest); err != nil {
		return nil, err
	}
	if socket == "" {
		r, err := findRunning(tun.StateDir, name, path)
		switch {
		case err == nil:
			socket = r.Socket
		case errors.Is(err, errNotRunning) && path != "":
			// The status files are root's: without them the file names
			// the socket.
			cfg, err := loadConfig(path)
			if err != nil {
				return nil, err
			}
			socket = socketPath(cfg)
		case errors.Is(err, errNotRunning):
			return nil, fmt.Errorf("%w (give -c FILE or --socket PATH)", err)
		default:
			return nil, err
		}
	}
	return control.NewClient(socket), nil
}

// helpArg reports whether the arguments are a request for help alone
// (as after "--", where flags are not parsed).
func helpArg(rest []string) bool {
	return len(rest) == 1 && (rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help")
}

func noArgs(name string, rest []string) error {
	if helpArg(rest) {
		return helpRequest{name}
	}
	if len(rest) > 0 {
		return usageError{fmt.Errorf("%s: unexpected arguments %q", name, rest)}
	}
	return nil
}

// liveQuery runs a command that takes --json and no arguments: it fetches
// path into out, and with --json prints it as it came (done).
func liveQuery(name string, args []string, path string, out any, stdout io.Writer) (done bool, err error) {
	var asJSON bool
	c, err := liveFlags(name, args, func(rest []string) error { return noArgs(name, rest) }, boolFlag{"json", &asJSON})
	if err != nil {
		return false, err
	}
	if err := c.Do("GET", path, out); err != nil {
		return false, fmt.Errorf("%s: %w", name, err)
	}
	if asJSON {
		return true, json.NewEncoder(stdout).Encode(out)
	}
	return false, nil
}

// cmdFlows prints the live flows once, or every second with --watch.
func cmdFlows(args []string, stdout io.Writer) error {
	var asJSON, watch bool
	c, err := liveFlags("flows", args, func(rest []string) error { return noArgs("flows", rest) },
		boolFlag{"json", &asJSON}, boolFlag{"watch", &watch})
	if err != nil {
		return err
	}
	for {
		var flows []control.Flow
		if err := c.Do("GET", "/v1/flows", &flows); err != nil {
			return fmt.Errorf("flows: %w", err)
		}
		if asJSON {
			if err := json.NewEncoder(stdout).Encode(flows); err != nil {
				return err
			}
		} else {
			if watch {
				fmt.Fprint(stdout, "\x1b[H\x1b[2J") // clear the terminal
			}
			printFlows(stdout, flows)
		}
		if !watch {
			return nil
		}
		time.Sleep(time.Second)
	}
}

func printFlows(w io.Writer, flows []control.Flow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROTO\tSRC\tDST\tNAME\tAPP\tRULE\tOUT\tIN\tAGE\tIDLE")
	now := time.Now()
	for _, f := range flows {
		name := dash(f.Domain)
		if f.Domain != "" {
			name += " (" + f.DomainSource + ")"
		}
		app := dash(f.User)
		if f.Exe != "" {
			app = filepath.Base(f.Exe)
		}
		rule := f.Rule
		if !f.Enforced {
			rule += " (" + f.Action + ", monitor)"
		}
		start, _ := time.Parse(time.RFC3339Nano, f.Start)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.ID, f.Proto, f.Src, f.Dst, name, app, rule,
			bytesText(f.BytesOut), bytesText(f.BytesIn), ago(now.Sub(start)), ago(time.Duration(f.IdleMS)*time.Millisecond))
	}
	tw.Flush()
	fmt.Fprintf(w, "%s\n", count(len(flows), "live flow"))
}

// cmdDenied prints the recent refusals.
func cmdDenied(args []string, stdout io.Writer) error {
	var denied []control.Denied
	if done, err := liveQuery("denied", args, "/v1/denied", &denied, stdout); done || err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LAST\tPROTO\tSRC\tDST\tNAME\tACTION\tRULE\tCOUNT")
	for _, d := range denied {
		last, _ := time.Parse(time.RFC3339Nano, d.Last)
		rule := d.Rule
		if d.Limit != "" { // allowed by d.Rule, refused by a limit
			rule = "limit " + d.Limit
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", last.Local().Format("15:04:05"), d.Proto, d.Src, d.Dst, dash(d.Domain), d.Action, rule, d.Count)
	}
	tw.Flush()
	return nil
}

// cmdStats prints the counters.
func cmdStats(args []string, stdout io.Writer) error {
	var stats map[string]uint64
	if done, err := liveQuery("stats", args, "/v1/stats", &stats, stdout); done || err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for _, k := range slices.Sorted(maps.Keys(stats)) {
		fmt.Fprintf(tw, "%s\t%d\n", k, stats[k])
	}
	tw.Flush()
	return nil
}

// cmdKill closes one live flow.
func cmdKill(args []string, stdout io.Writer) error {
	var id string
	c, err := liveFlags("kill", args, func(rest []string) error {
		if helpArg(rest) {
			return helpRequest{"kill"}
		}
		if len(rest) != 1 {
			return usageError{errors.New("kill: want one flow ID (see tunwall flows)")}
		}
		if n, err := strconv.ParseUint(rest[0], 10, 64); err != nil || n == 0 {
			return usageError{fmt.Errorf("kill: %q is not a flow ID", rest[0])}
		}
		id = rest[0]
		return nil
	})
	if err != nil {
		return err
	}
	if err := c.Do("DELETE", "/v1/flows/"+id, nil); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	fmt.Fprintf(stdout, "flow %s closed\n", id)
	return nil
}

// cmdDashboard prints the link to the dashboard, token included.
func cmdDashboard(args []string, stdout io.Writer) error {
	c, err := liveFlags("dashboard", args, func(rest []string) error { return noArgs("dashboard", rest) })
	if err != nil {
		return err
	}
	var out struct{ URL string }
	if err := c.Do("GET", "/v1/dashboard", &out); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	fmt.Fprintln(stdout, out.URL)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, suffix := float64(n), "B"
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + suffix
}

func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Hour:
		return d.Truncate(time.Second).String()
	}
	return strings.TrimSuffix(d.Truncate(time.Minute).String(), "0s")
}
