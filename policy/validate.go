package policy

import (
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// validator turns the wire config into a Config, collecting every problem
// with the position of the YAML node it concerns.
type validator struct {
	file    string
	ast     *ast.File
	errs    Errors
	byName  map[string]*List    // the lists rules may name
	section map[string]fileList // the lists section as written, loaded or not
	// details are errors in other files (a list's lines), each with the
	// error of this file they explain: they are reported right after it.
	details map[*Error]*Error
}

// errorf records a problem at the node addressed by path ("$.a.b[2]"). When
// the node is absent (a default value), the nearest present parent is used.
func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, at(v.file, v.node(path), format, args...))
}

// either reads a setting that takes one of two values: off (false) or on
// (true). Anything else is an error naming the setting by its path.
func (v *validator) either(path, got, off, on string) bool {
	switch got {
	case off:
		return false
	case on:
		return true
	}
	v.errorf(path, "%s %q: want %s or %s", strings.TrimPrefix(path, "$."), got, off, on)
	return false
}

func (v *validator) node(path string) ast.Node {
	for path != "" && path != "$" {
		if p, err := yaml.PathString(path); err == nil {
			if n, err := p.FilterFile(v.ast); err == nil && n != nil {
				return n
			}
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return nil
}

func (v *validator) config(w *fileConfig) *Config {
	cfg := &Config{
		Tun:     v.tun(&w.Tun),
		Routing: v.routing(&w.Routing),
		Egress:  v.egress(&w.Egress),
		Limits:  v.limits(&w.Limits),
		Log:     v.log(&w.Log),
	}
	cfg.DNS = v.dns(&w.DNS)
	cfg.Control = v.control(&w.Control)
	cfg.Capture = v.capture(&w.Capture)
	cfg.Lists = v.lists(w.Lists)
	v.byName = make(map[string]*List, len(cfg.Lists))
	for _, l := range cfg.Lists {
		v.byName[l.Name] = l
	}
	cfg.Policy = v.policy(&w.Policy)
	v.routingNeeds(cfg)
	for _, a := range cfg.Tun.Addresses {
		if a.Addr().Is6() && cfg.Tun.MTU < 1280 {
			v.errorf("$.tun.mtu", "tun.mtu %d is below 1280, the minimum for IPv6 address %s", cfg.Tun.MTU, a)
			break
		}
	}
	return cfg
}

func (v *validator) tun(w *fileTun) TunConfig {
	c := TunConfig{Name: w.Name, MTU: w.MTU, QueueLength: w.QueueLength}
	if err := checkIfName(w.Name); err != nil {
		v.errorf("$.tun.name", "tun.name: %v", err)
	}
	if w.MTU < 576 || w.MTU > 65535 {
		v.errorf("$.tun.mtu", "tun.mtu %d out of range (576-65535)", w.MTU)
	}
	if w.QueueLength < 1 || w.QueueLength > MaxQueueLength {
		v.errorf("$.tun.queue_length", "tun.queue_length %d out of range (1-%d packets)", w.QueueLength, MaxQueueLength)
	}
	if len(w.Addresses) == 0 {
		v.errorf("$.tun.addresses", "tun.addresses: at least one address is required")
	}
	for i, s := range w.Addresses {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			v.errorf(fmt.Sprintf("$.tun.addresses[%d]", i), "tun.addresses: %q is not an address with prefix length (like 198.18.0.1/30)", s)
			continue
		}
		c.Addresses = append(c.Addresses, p)
	}
	return c
}

func (v *validator) egress(w *fileEgress) EgressConfig {
	c := EgressConfig{Interface: w.Interface}
	mark, err := parseUint32(w.Mark)
	if err != nil {
		v.errorf("$.egress.mark", "egress.mark: %v", err)
	}
	c.Mark = mark
	if w.Interface != "" {
		if err := checkIfName(w.Interface); err != nil {
			v.errorf("$.egress.interface", "egress.interface: %v", err)
		}
	}
	return c
}

func (v *validator) limits(w *fileLimits) Limits {
	c := Limits{MaxFlows: w.MaxFlows, MaxPendingTCP: w.MaxPendingTCP, MaxUDPSessions: w.MaxUDPSessions}
	for _, l := range []struct {
		key string
		n   int
	}{{"max_flows", w.MaxFlows}, {"max_pending_tcp", w.MaxPendingTCP}, {"max_udp_sessions", w.MaxUDPSessions}} {
		if l.n <= 0 {
			v.errorf("$.limits."+l.key, "limits.%s must be positive, got %d", l.key, l.n)
		}
	}
	switch {
	case w.MaxFlowsPerSrc < 0:
		v.errorf("$.limits.max_flows_per_source", "limits.max_flows_per_source must be positive, or 0 for no limit, got %d", w.MaxFlowsPerSrc)
	case w.MaxFlowsPerSrc > w.MaxFlows && w.MaxFlows > 0:
		v.errorf("$.limits.max_flows_per_source", "limits.max_flows_per_source %d is above limits.max_flows %d", w.MaxFlowsPerSrc, w.MaxFlows)
	}
	c.MaxFlowsPerSource = w.MaxFlowsPerSrc
	c.UDPIdle = v.duration("udp_idle", w.UDPIdle)
	c.TCPIdle = v.duration("tcp_idle", w.TCPIdle)
	if w.BufferMemory != "auto" {
		c.BufferMemory = v.size("limits.buffer_memory", w.BufferMemory, ", or auto", minBufferMemory, "1MiB")
	}
	return c
}

// size reads the size s given for key (a dotted path). One below least
// (leastText in the message) is an error; orElse ends the message for a
// string that is no size.
func (v *validator) size(key, s, orElse string, least int64, leastText string) int64 {
	n, err := ParseSize(s)
	switch {
	case err != nil:
		v.errorf("$."+key, "%s: %v%s", key, err, orElse)
	case n < least:
		v.errorf("$."+key, "%s %s is below %s", key, s, leastText)
	}
	return n
}

// minBufferMemory is the smallest limits.buffer_memory: a few flows'
// worth of buffers.
const minBufferMemory = 1 << 20

func (v *validator) duration(key, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		v.errorf("$.limits."+key, "limits.%s %q: want a positive duration like 60s or 2h", key, s)
	}
	return d
}

func (v *validator) log(w *fileLog) LogConfig {
	if !oneOf(w.Level, "debug", "info", "warn", "error") {
		v.errorf("$.log.level", "log.level %q: want debug, info, warn or error", w.Level)
	}
	if !oneOf(w.Format, "auto", "json", "console") {
		v.errorf("$.log.format", "log.format %q: want auto, json or console", w.Format)
	}
	if w.Output == "" {
		v.errorf("$.log.output", "log.output: want stderr, stdout or a file path")
	}
	return LogConfig(*w)
}

// prefixes parses a list of CIDRs or bare addresses (a bare address is a
// single-host prefix).
func (v *validator) prefixes(path, what string, ss []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range ss {
		p, err := parsePrefix(s)
		if err != nil {
			v.errorf(fmt.Sprintf("%s[%d]", path, i), "%s: %v", what, err)
			continue
		}
		out = append(out, p)
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func checkIfName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("name is empty")
	case len(s) > 15:
		return fmt.Errorf("%q is longer than 15 bytes", s)
	case strings.ContainsAny(s, "/:") || strings.ContainsFunc(s, unicode.IsSpace) || strings.ContainsFunc(s, unicode.IsControl) || s == "." || s == "..":
		return fmt.Errorf("%q is not a valid interface name", s)
	}
	return nil
}

func oneOf(s string, set ...string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

// Capture bounds: a file must hold a packet; a packet is at most 64 KiB
// plus headers.
const (
	minCaptureBytes = 1 << 10
	maxSnaplen      = 1 << 18
)

func (v *validator) capture(w *fileCapture) CaptureConfig {
	c := CaptureConfig{Enabled: w.Enabled, Snaplen: w.Snaplen}
	c.MaxBytes = v.size("capture.max_bytes", w.MaxBytes, "", minCaptureBytes, "1KiB")
	if w.Snaplen < 64 || w.Snaplen > maxSnaplen {
		v.errorf("$.capture.snaplen", "capture.snaplen %d: want 64-%d", w.Snaplen, maxSnaplen)
	}
	return c
}

// ParseSize reads a byte count: a number, optionally followed by KiB, MiB,
// GiB (powers of 1024) or KB, MB, GB (powers of 1000).
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (such as 64MiB or 1000000)", s)
	}
	return n * mult, nil
}

// maxSocketPath is the longest path a unix socket may have on Linux (its
// address holds 108 bytes, the terminating zero included).
const maxSocketPath = 107

// minTokenLen is the shortest bearer token control.token_file may hold.
const minTokenLen = 16

func (v *validator) control(w *fileControl) ControlConfig {
	c := ControlConfig{Socket: w.Socket, Group: w.Group, GID: -1}
	switch {
	case w.Socket == "":
	case !strings.HasPrefix(w.Socket, "/"):
		v.errorf("$.control.socket", "control.socket %q: give an absolute path", w.Socket)
	case len(w.Socket) > maxSocketPath:
		v.errorf("$.control.socket", "control.socket: the path is %d bytes, longer than the %d a unix socket's may be; give a shorter one", len(w.Socket), maxSocketPath)
	}
	if w.Group != "" {
		g, err := user.LookupGroup(w.Group)
		if err == nil {
			c.GID, err = strconv.Atoi(g.Gid)
		}
		if err != nil {
			v.errorf("$.control.group", "control.group %q: no such group on this machine", w.Group)
		}
	}
	if w.Listen != "" {
		ap, err := netip.ParseAddrPort(w.Listen)
		if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
			v.errorf("$.control.listen", "control.listen %q: give a loopback address and port, such as 127.0.0.1:9190 or [::1]:9190", w.Listen)
		}
		c.Listen = ap
	}
	if w.TokenFile != "" {
		if w.Listen == "" {
			v.errorf("$.control.token_file", "control.token_file is only used with control.listen")
		}
		c.TokenFile = listPath(v.file, w.TokenFile)
		c.Token = v.token(c.TokenFile)
	}
	for i, h := range w.Hosts {
		name, ok := NormalizeDomain(strings.TrimSuffix(h, "."))
		if !ok || strings.Contains(h, "*") {
			v.errorf(fmt.Sprintf("$.control.hosts[%d]", i), "control.hosts: %q is not a host name", h)
			continue
		}
		c.Hosts = append(c.Hosts, name)
	}
	if len(w.Hosts) > 0 && w.Listen == "" {
		v.errorf("$.control.hosts", "control.hosts is only used with control.listen")
	}
	return c
}

// token reads the bearer token in file: its first line, which must be
// long enough, from a file others cannot read.
func (v *validator) token(file string) string {
	const path = "$.control.token_file"
	fi, err := os.Stat(file)
	if err != nil {
		v.errorf(path, "control.token_file: %v", err)
		return ""
	}
	if fi.Mode().Perm()&0o007 != 0 {
		v.errorf(path, "control.token_file %s: others may read it (mode %04o); make it 0600 or 0640", file, fi.Mode().Perm())
		return ""
	}
	data, err := os.ReadFile(file)
	if err != nil {
		v.errorf(path, "control.token_file: %v", err)
		return ""
	}
	tok, _, _ := strings.Cut(string(data), "\n")
	tok = strings.TrimSpace(tok)
	if len(tok) < minTokenLen || strings.ContainsAny(tok, " \t\r") {
		v.errorf(path, "control.token_file %s: the token must be one word of at least %d characters", file, minTokenLen)
		return ""
	}
	return tok
}

func (v *validator) dns(w *fileDNS) DNSConfig {
	c := DNSConfig{CacheSize: w.CacheSize}
	c.BlockZero = v.either("$.dns.blocked_answer", w.BlockedAnswer, "nxdomain", "zero")
	if w.Upstream != "" {
		ap, err := netip.ParseAddrPort(w.Upstream)
		if err != nil {
			if a, aerr := netip.ParseAddr(w.Upstream); aerr == nil {
				ap, err = netip.AddrPortFrom(a, 53), nil
			}
		}
		if err != nil || ap.Port() == 0 {
			v.errorf("$.dns.upstream", "dns.upstream %q: want an address, or address:port", w.Upstream)
		}
		c.Upstream = ap
	}
	if w.CacheSize < 1 {
		v.errorf("$.dns.cache_size", "dns.cache_size must be positive (entries of the address -> name cache), got %d", w.CacheSize)
	}
	return c
}
