package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mattn/go-isatty"

	"github.com/tunwall/tunwall/policy"
)

// setup is what "tunwall run" set up, for the startup summary.
type setup struct {
	cfg         *policy.Config
	device      string
	mtu         int
	routing     []string // rules and routes installed
	appIdentity bool
	socket      string
	dashboard   string
}

// onTerminal reports whether w is a terminal: the summary is for people.
func onTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// printSummary writes what tunwall set up and where to look next.
func printSummary(w io.Writer, s setup) {
	cfg := s.cfg
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "  %-10s %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(&b, "tunwall %s is running\n", versionString())
	addrs := make([]string, 0, len(cfg.Tun.Addresses))
	for _, a := range cfg.Tun.Addresses {
		addrs = append(addrs, a.String())
	}
	line("device", "%s, mtu %d, %s", s.device, s.mtu, strings.Join(addrs, " "))
	mode := cfg.Routing.Mode
	switch {
	case mode == "none":
		mode += ": route traffic into " + s.device + " yourself"
	case cfg.Routing.Strict:
		mode += ", strict (traffic is blocked, not leaked, while tunwall is down)"
	}
	line("routing", "%s", mode)
	if len(s.routing) > 0 {
		line("", "%d rules and routes installed, removed at stop", len(s.routing))
	}
	p := cfg.Policy
	enforce := "enforcing"
	if p.Monitor() {
		enforce = "monitor mode: verdicts are logged, nothing is refused"
	}
	line("policy", "%s, default %s, %s", count(p.Len(), "rule"), p.Default(), enforce)
	line("", "from %s (hash %s)", cfg.Source, cfg.Hash)
	for _, l := range cfg.Lists {
		line("list", "%s: %d addresses, %d domains from %s", l.Name, l.Addrs, l.Domains, l.File)
	}
	if !s.appIdentity {
		line("apps", "unavailable: flows carry no user or program")
	}
	line("log", "%s", logWhere(cfg.Log))
	line("control", "%s", s.socket)
	if s.dashboard != "" {
		line("dashboard", "%s", s.dashboard)
	}
	b.WriteString("next: tunwall flows --watch · tunwall denied · tunwall stats · tunwall explain PROTO SRC DST:PORT")
	if s.dashboard != "" {
		b.WriteString(" · open the dashboard")
	}
	b.WriteString(" · Ctrl-C stops\n")
	io.WriteString(w, b.String())
}

func logWhere(l policy.LogConfig) string {
	switch l.Output {
	case "stderr", "stdout":
		return fmt.Sprintf("%s (%s, level %s)", l.Output, l.Format, l.Level)
	}
	return fmt.Sprintf("%s (level %s)", l.Output, l.Level)
}
