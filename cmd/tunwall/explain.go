package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tunwall/tunwall/policy"
)

func cmdExplain(args []string, stdout io.Writer) error {
	var userArg, appArg, domainArg, atArg string
	path, rest, err := flags("explain", args, false, stringFlag{"user", &userArg}, stringFlag{"app", &appArg}, stringFlag{"domain", &domainArg}, stringFlag{"at", &atArg})
	if err != nil {
		return err
	}
	if len(rest) != 3 {
		return usageError{fmt.Errorf("explain: want PROTO SRC DST[:PORT], got %s", count(len(rest), "argument"))}
	}
	f, err := parseFlow(rest[0], rest[1], rest[2])
	if err != nil {
		return usageError{fmt.Errorf("explain: %w", err)}
	}
	if f.Owner, err = parseOwner(userArg, appArg); err != nil {
		return usageError{fmt.Errorf("explain: %w", err)}
	}
	if atArg != "" {
		if f.At, err = parseAt(atArg); err != nil {
			return usageError{fmt.Errorf("explain: %w", err)}
		}
	}
	if domainArg != "" {
		d, ok := policy.NormalizeDomain(domainArg)
		if !ok {
			return usageError{fmt.Errorf("explain: --domain %q is not a host name", domainArg)}
		}
		f.Domain = d
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	if f.Domain == "" && cfg.Policy.NeedsDomain() {
		fmt.Fprintln(stdout, "note: rules with domains or domain lists are skipped, as for a flow whose name is unknown (give --domain NAME)")
	}
	if f.Owner == nil && cfg.Policy.NeedsOwner() {
		fmt.Fprintln(stdout, "note: rules with users or apps are skipped, as for a flow from another host (give --user and/or --app for one from this machine)")
	}
	v, misses := cfg.Policy.Explain(f)
	if v.Monitor {
		fmt.Fprintln(stdout, "note: policy.mode is monitor: this verdict is logged, and the flow let through")
	}
	for i, m := range misses {
		if i == maxMisses {
			fmt.Fprintf(stdout, "  ... and %d more rules that do not match\n", len(misses)-maxMisses)
			break
		}
		fmt.Fprintf(stdout, "  rule #%d %q (%s:%d) does not match: %s\n", m.Index+1, m.Rule, cfg.Source, m.Line, m.Why)
	}
	if v.Index < 0 {
		fmt.Fprintf(stdout, "%s: no rule matches, policy.default is %s\n", v.Action, v.Action)
		return nil
	}
	fmt.Fprintf(stdout, "%s: rule %q (rule #%d, %s:%d)\n", v.Action, v.Rule, v.Index+1, cfg.Source, cfg.Policy.RuleLine(v.Index))
	return nil
}

// maxMisses is how many non-matching rules explain prints.
const maxMisses = 50

// parseOwner builds the owner of a flow from this machine from --user (a
// name or uid) and --app (an executable path); nil when neither is given.
func parseOwner(userArg, appArg string) (*policy.Owner, error) {
	if userArg == "" && appArg == "" {
		return nil, nil
	}
	o := &policy.Owner{Exe: appArg}
	if appArg != "" && !strings.HasPrefix(appArg, "/") {
		return nil, fmt.Errorf("--app %q: give the executable's absolute path", appArg)
	}
	if userArg == "" {
		return o, nil
	}
	if uid, err := strconv.ParseUint(userArg, 10, 32); err == nil {
		o.UID = uint32(uid)
		if u, err := user.LookupId(userArg); err == nil {
			o.User = u.Username
		}
		return o, nil
	}
	uid, err := policy.UserID(userArg)
	if err != nil {
		return nil, fmt.Errorf("--user: %w", err)
	}
	o.UID, o.User = uid, userArg
	return o, nil
}

// parseFlow reads the explain arguments. SRC may carry a port; DST must for
// tcp and udp, and must not for icmp.
func parseFlow(proto, src, dst string) (policy.Flow, error) {
	p, err := policy.ParseProto(strings.ToLower(proto))
	if err != nil {
		return policy.Flow{}, err
	}
	f := policy.Flow{Proto: p}
	if f.Src, err = parseEndpoint(src, false); err != nil {
		return f, fmt.Errorf("SRC: %w", err)
	}
	if f.Dst, err = parseEndpoint(dst, p != policy.ICMP); err != nil {
		return f, fmt.Errorf("DST: %w", err)
	}
	if p == policy.ICMP {
		if f.Dst.Port() != 0 {
			return f, fmt.Errorf("DST: icmp has no ports")
		}
		f.Type = 8
		if f.Dst.Addr().Is6() {
			f.Type = 128
		}
	}
	if f.Src.Addr().Is4() != f.Dst.Addr().Is4() {
		return f, fmt.Errorf("SRC and DST are of different address families")
	}
	return f, nil
}

// parseEndpoint accepts "addr", "addr:port" or "[v6addr]:port".
func parseEndpoint(s string, needPort bool) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 && needPort {
			return ap, fmt.Errorf("%q: port must be 1-65535", s)
		}
		return ap, nil
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if _, err := netip.ParseAddr(host); err == nil {
			return netip.AddrPort{}, fmt.Errorf("%q: port %q: want 1-65535", s, port) // the address is fine
		}
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		host, _, _ := strings.Cut(s, ":")
		if _, name := policy.NormalizeDomain(host); name && strings.Contains(host, ".") && strings.ContainsFunc(host, unicode.IsLetter) {
			return netip.AddrPort{}, fmt.Errorf("%q is not an address or address:port (for a name, give an address and --domain %s)", s, host)
		}
		return netip.AddrPort{}, fmt.Errorf("%q is not an address or address:port", s)
	}
	if needPort {
		return netip.AddrPort{}, fmt.Errorf("%q: a port is required (like %s)", s, netip.AddrPortFrom(a, 443))
	}
	return netip.AddrPortFrom(a.Unmap(), 0), nil
}

// parseAt reads --at: RFC 3339, or "YYYY-MM-DD HH:MM" in local time.
func parseAt(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02 15:04", s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--at %q: want RFC 3339 (2026-11-23T09:00:00+01:00) or local \"2026-11-23 09:00\"", s)
}
