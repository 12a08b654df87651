package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // file:line:col: message substring
	}{
		{"unknown top-level key", "tunnel:\n  name: x\n", `test.yaml:1:1: unknown field "tunnel"`},
		{"unknown rule key", "policy:\n  rules:\n    - name: a\n      action: allow\n      dest: [1.2.3.4]\n", `test.yaml:5:7: unknown field "dest"`},
		{"bad CIDR", "policy:\n  rules:\n    - name: web\n      action: allow\n      dst: [10.0.0.0/33]\n", `test.yaml:5:13: rule "web": dst: "10.0.0.0/33" is not a CIDR`},
		{"host bits", "policy:\n  rules:\n    - name: web\n      action: allow\n      src: [10.0.0.1/24]\n", `test.yaml:5:13: rule "web": src: "10.0.0.1/24" has host bits set (did you mean 10.0.0.0/24?)`},
		{"duplicate name", "policy:\n  rules:\n    - {name: a, action: allow}\n    - {name: a, action: deny}\n", `test.yaml:4:14: rule "a": duplicate name (first used by rule #1)`},
		{"missing name", "policy:\n  rules:\n    - action: allow\n", `test.yaml:3:7: rule #1: name is required`},
		{"bad port", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: tcp\n      ports: [0]\n", `test.yaml:6:15: rule "p": port "0": want 1-65535`},
		{"port too big", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: tcp\n      ports: [65536]\n", `rule "p": port "65536": want 1-65535`},
		{"backwards range", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: udp\n      ports: [\"90-80\"]\n", `rule "p": port range "90-80" is backwards`},
		{"ports without proto", "policy:\n  rules:\n    - name: p\n      action: allow\n      ports: [80]\n", `test.yaml:5:14: rule "p": ports need proto tcp, udp or [tcp, udp]`},
		{"ports with icmp", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: [tcp, icmp]\n      ports: [80]\n", `rule "p": ports need proto`},
		{"bad action", "policy:\n  rules:\n    - name: p\n      action: permit\n", `test.yaml:4:15: rule "p": unknown action "permit"`},
		{"bad default", "policy:\n  default: maybe\n", `test.yaml:2:12: policy.default: unknown action "maybe"`},
		{"bad proto", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: sctp\n", `rule "p": unknown protocol "sctp"`},
		{"half a range", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: tcp\n      ports: [\"80-\"]\n", `test.yaml:6:15: rule "p": port range "80-": want two ports 1-65535, like "2200-2299"`},
		{"three ports in a range", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: tcp\n      ports: [\"80-90-100\"]\n", `rule "p": port range "80-90-100": want two ports`},
		{"float for a port", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: tcp\n      ports: [80.0]\n", `rule "p": port: want a number 1-65535 or a range like "2200-2299", got 80.0`},
		{"whole number tagged as a float for a port", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: tcp\n      ports: [!!float 80]\n", `rule "p": port: want a number 1-65535 or a range like "2200-2299", got 80.0`},
		{"settings for a port", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: tcp\n      ports: [{from: 80}]\n", `rule "p": port: want a number 1-65535 or a range like "2200-2299", got key: value settings`},
		{"protocol number", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: [tcp, 17]\n", `test.yaml:5:20: rule "p": proto: want tcp, udp or icmp, got 17`},
		{"settings for a user", "policy:\n  rules:\n    - name: p\n      action: allow\n      users: [{uid: 5}]\n", `rule "p": want a uid or a range like 1000-1999, got key: value settings`},
		{"table past 32 bits", "routing:\n  mode: all\n  table: 4294967296\n", `test.yaml:3:10: routing.table 4294967296: want a table id 1-4294967295 other than 253-255`},
		{"bad tun address", "tun:\n  addresses: [198.18.0.1]\n", `test.yaml:2:15: tun.addresses: "198.18.0.1" is not an address with prefix length`},
		{"mtu too small", "tun:\n  mtu: 100\n", `test.yaml:2:8: tun.mtu 100 out of range`},
		{"queue length zero", "tun:\n  queue_length: 0\n", `test.yaml:2:17: tun.queue_length 0 out of range (1-100000 packets)`},
		{"queue length too long", "tun:\n  queue_length: 1000000\n", `test.yaml:2:17: tun.queue_length 1000000 out of range (1-100000 packets)`},
		{"queue length not a number", "tun:\n  queue_length: lots\n", `test.yaml:2:17: tun.queue_length: want a whole number, got "lots"`},
		{"bad duration", "limits:\n  udp_idle: soon\n", `test.yaml:2:13: limits.udp_idle "soon"`},
		{"negative limit", "limits:\n  max_flows: -1\n", `limits.max_flows must be positive`},
		{"no name cache", "dns:\n  cache_size: 0\n", `test.yaml:2:15: dns.cache_size must be positive (entries of the address -> name cache), got 0`},
		{"negative name cache", "dns:\n  cache_size: -3\n", `test.yaml:2:15: dns.cache_size must be positive (entries of the address -> name cache), got -3`},
		{"negative per-source limit", "limits:\n  max_flows_per_source: -5\n", `test.yaml:2:25: limits.max_flows_per_source must be positive, or 0 for no limit, got -5`},
		{"per-source limit above the total", "limits:\n  max_flows: 100\n  max_flows_per_source: 101\n", `test.yaml:3:25: limits.max_flows_per_source 101 is above limits.max_flows 100`},
		{"bad mark", "egress:\n  mark: lots\n", `test.yaml:2:9: egress.mark: "lots" is not a number`},
		{"split without include", "routing:\n  mode: split\n", `test.yaml:2:9: routing.mode split needs routing.include`},
		{"include without split", "routing:\n  mode: all\n  include: [10.0.0.0/8]\n", `test.yaml:3:12: routing.include only applies to routing.mode split`},
		{"exclude with none", "routing:\n  exclude: [10.0.0.0/8]\n", `test.yaml:2:12: routing.exclude applies when tunwall routes`},
		{"bad exclude", "routing:\n  mode: all\n  exclude: [10.0.0.1/8]\n", `test.yaml:3:13: routing.exclude: "10.0.0.1/8" has host bits set`},
		{"uids with none", "routing:\n  uids: [1000]\n", `routing.uids chooses whose traffic mode all or split sends`},
		{"bad uid", "routing:\n  mode: all\n  uids: [bob]\n", `test.yaml:3:10: routing.uids: "bob" is not a number`},
		{"backwards uids", "routing:\n  mode: all\n  uids: [\"2000-1000\"]\n", `routing.uids: range "2000-1000" is backwards`},
		{"bad from", "routing:\n  from: [\"eth/0\"]\n", `test.yaml:2:10: routing.from: "eth/0" is not a valid interface name`},
		{"control character in a name", "tun:\n  name: \"tw\\0\"\n", `test.yaml:2:9: tun.name: "tw\x00" is not a valid interface name`},
		{"tab in an interface", "egress:\n  interface: \"eth\\t0\"\n", `test.yaml:2:14: egress.interface: "eth\t0" is not a valid interface name`},
		{"from twice", "routing:\n  from: [eth1, eth1]\n", `routing.from: "eth1" is listed twice`},
		{"from the tun", "tun:\n  name: tw9\nrouting:\n  from: [tw9]\n", `routing.from: "tw9" is tunwall's own TUN device`},
		{"routing without mark", "egress:\n  mark: 0\nrouting:\n  mode: all\n", `test.yaml:2:9: egress.mark is 0, but routing sends traffic into the TUN`},
		{"bad mode", "routing:\n  mode: sideways\n", `routing.mode "sideways": want none, all or split`},
		{"bad level", "log:\n  level: loud\n", `log.level "loud"`},
		{"bad on_reload", "policy:\n  on_reload: sometimes\n", `test.yaml:2:14: policy.on_reload "sometimes": want keep or reevaluate`},
		{"bad policy mode", "policy:\n  mode: watch\n", `test.yaml:2:9: policy.mode "watch": want enforce or monitor`},
		{"bad blocked answer", "dns:\n  blocked_answer: refuse\n", `test.yaml:2:19: dns.blocked_answer "refuse": want nxdomain or zero`},
		{"unknown user", "policy:\n  rules:\n    - name: u\n      action: deny\n      users: [no-such-user-tw]\n", `test.yaml:5:15: rule "u": user "no-such-user-tw": no such user on this machine`},
		{"backwards users", "policy:\n  rules:\n    - name: u\n      action: deny\n      users: [\"2000-1000\"]\n", `rule "u": range "2000-1000" is backwards`},
		{"negative uid", "policy:\n  rules:\n    - name: u\n      action: deny\n      users: [-5]\n", `rule "u": -5 is negative`},
		{"empty users", "policy:\n  rules:\n    - name: u\n      action: deny\n      users: []\n", `rule "u": empty list (omit users to match any user)`},
		{"relative app path", "policy:\n  rules:\n    - name: a\n      action: deny\n      apps: [bin/curl]\n", `test.yaml:5:14: rule "a": app "bin/curl": a path must be absolute`},
		{"bad app glob", "policy:\n  rules:\n    - name: a\n      action: deny\n      apps: [\"/usr/bin/[\"]\n", `rule "a": app "/usr/bin/[": bad glob`},
		{"empty app", "policy:\n  rules:\n    - name: a\n      action: deny\n      apps: [\"\"]\n", `rule "a": empty app`},
		{"relative socket", "control:\n  socket: tw.sock\n", `test.yaml:2:11: control.socket "tw.sock": give an absolute path`},
		{"unknown socket group", "control:\n  group: no-such-group-tw\n", `test.yaml:2:10: control.group "no-such-group-tw": no such group on this machine`},
		{"socket path too long", "control:\n  socket: /run/" + strings.Repeat("d", 95) + "/tw.sock\n", `test.yaml:2:11: control.socket: the path is 108 bytes, longer than the 107 a unix socket's may be; give a shorter one`},
		{"listen not loopback", "control:\n  listen: 0.0.0.0:9190\n", `test.yaml:2:11: control.listen "0.0.0.0:9190": give a loopback address and port`},
		{"listen name", "control:\n  listen: localhost:9190\n", `control.listen "localhost:9190": give a loopback address and port`},
		{"listen no port", "control:\n  listen: 127.0.0.1\n", `control.listen "127.0.0.1": give a loopback address and port`},
		{"listen port 0", "control:\n  listen: \"[::1]:0\"\n", `control.listen "[::1]:0": give a loopback address and port`},
		{"token without listen", "control:\n  token_file: /nonexistent/tw-token\n", `test.yaml:2:15: control.token_file is only used with control.listen`},
		{"missing token file", "control:\n  listen: 127.0.0.1:9190\n  token_file: /nonexistent/tw-token\n", `test.yaml:3:15: control.token_file: stat /nonexistent/tw-token: no such file or directory`},
		{"bad control host", "control:\n  listen: 127.0.0.1:9190\n  hosts: [\"*.lan\"]\n", `test.yaml:3:11: control.hosts: "*.lan" is not a host name`},
		{"hosts without listen", "control:\n  hosts: [tw.lan]\n", `test.yaml:2:10: control.hosts is only used with control.listen`},
		{"bad capture size", "capture:\n  max_bytes: lots\n", `test.yaml:2:14: capture.max_bytes: "lots" is not a size (such as 64MiB or 1000000)`},
		{"tiny capture", "capture:\n  max_bytes: 100\n", `test.yaml:2:14: capture.max_bytes 100 is below 1KiB`},
		{"negative capture", "capture:\n  max_bytes: -5MiB\n", `capture.max_bytes: "-5MiB" is not a size`},
		{"bad buffer memory", "limits:\n  buffer_memory: plenty\n", `test.yaml:2:18: limits.buffer_memory: "plenty" is not a size (such as 64MiB or 1000000), or auto`},
		{"tiny buffer memory", "limits:\n  buffer_memory: 64KiB\n", `test.yaml:2:18: limits.buffer_memory 64KiB is below 1MiB`},
		{"bad snaplen", "capture:\n  snaplen: 10\n", `test.yaml:2:12: capture.snaplen 10: want 64-262144`},
		{"syntax error", "policy:\n  rules: [\n", `test.yaml:2:`},
		{"type error", "tun:\n  mtu: [1]\n", `test.yaml:2:8: tun.mtu: want a whole number, got a list`},
		{"not a mapping", "- a\n- b\n", `test.yaml:1:1: the file must be a mapping`},
		{"duplicate key", "tun:\n  mtu: 1500\n  mtu: 1400\n", `test.yaml:3:3:`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("test.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse accepted bad config, want error containing %q", tt.want)
			}
			if _, ok := AsErrors(err); !ok {
				t.Errorf("error %T is not policy.Errors", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
		})
	}
}

func TestParseReportsEveryError(t *testing.T) {
	_, err := Parse("f.yaml", []byte("policy:\n  rules:\n    - {name: a, action: nope}\n    - {name: b, action: allow, dst: [x]}\n"))
	es, ok := AsErrors(err)
	if !ok || len(es) != 2 {
		t.Fatalf("want 2 errors, got %v", err)
	}
	if es[0].Line != 3 || es[1].Line != 4 {
		t.Errorf("errors not in file order: %v", err)
	}
}

func TestParseDefaultsAndValues(t *testing.T) {
	cfg, err := Parse("f.yaml", []byte(`
tun:
  name: gw9
  mtu: 9000
egress:
  mark: 0x10
  interface: eth1
limits:
  udp_idle: 5s
  max_flows_per_source: 512
routing:
  strict: false
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tun.Name != "gw9" || cfg.Tun.MTU != 9000 || cfg.Tun.QueueLength != DefaultQueueLength {
		t.Errorf("tun = %+v", cfg.Tun)
	}
	want := []netip.Prefix{netip.MustParsePrefix("198.18.0.1/30"), netip.MustParsePrefix("fd7a:7475:6e77::1/126")}
	if len(cfg.Tun.Addresses) != 2 || cfg.Tun.Addresses[0] != want[0] || cfg.Tun.Addresses[1] != want[1] {
		t.Errorf("default addresses = %v", cfg.Tun.Addresses)
	}
	if cfg.Egress.Mark != 0x10 || cfg.Egress.Interface != "eth1" {
		t.Errorf("egress = %+v", cfg.Egress)
	}
	if cfg.Limits.UDPIdle != 5*time.Second || cfg.Limits.TCPIdle != 2*time.Hour || cfg.Limits.MaxFlows != 65536 || cfg.Limits.BufferMemory != 0 || cfg.Limits.MaxFlowsPerSource != 512 {
		t.Errorf("limits = %+v", cfg.Limits)
	}
	if cfg.Routing.Mode != "none" || cfg.Routing.Strict || cfg.Routing.Table != 7475 {
		t.Errorf("routing = %+v", cfg.Routing)
	}
	if cfg.Policy.Default() != Deny || cfg.Policy.Len() != 0 {
		t.Errorf("policy default = %v, %d rules", cfg.Policy.Default(), cfg.Policy.Len())
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	cfg, err := Parse("empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tun.Name != "tw0" || cfg.Egress.Mark != 0x7475 || cfg.Tun.QueueLength != 4096 {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestEmbeddedDefault(t *testing.T) {
	cfg, err := Default()
	if err != nil {
		t.Fatalf("embedded default does not parse: %v", err)
	}
	if cfg.Routing.Mode != "none" {
		t.Errorf("embedded default routes traffic: mode %q", cfg.Routing.Mode)
	}
	if v := cfg.Policy.Decide(flow(TCP, "10.0.0.2:1", "192.0.2.1:443")); v.Action != Allow {
		t.Errorf("default policy does not allow https: %+v", v)
	}
	if v := cfg.Policy.Decide(flow(TCP, "10.0.0.2:1", "192.0.2.1:445")); v.Action != Reject {
		t.Errorf("default policy does not reject smb: %+v", v)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("err = %v, want not-exist", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestRuleLine(t *testing.T) {
	cfg, err := Parse("f.yaml", []byte("policy:\n  rules:\n    - name: a\n      action: allow\n    - name: b\n      action: deny\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Policy.RuleLine(0) != 3 || cfg.Policy.RuleLine(1) != 5 {
		t.Errorf("rule lines = %d, %d; want 3, 5", cfg.Policy.RuleLine(0), cfg.Policy.RuleLine(1))
	}
}

func TestRoutingModes(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte(`
routing:
  mode: split
  include: [10.1.0.0/16, "fd00::/8", 192.0.2.7]
  exclude: [10.1.2.0/24]
  uids: [1000, "2000-2999", " 3000 "]
  from: [lan0]
  keep_blocked: true
  table: 100
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routing
	if r.Mode != "split" || !r.Strict || !r.KeepBlocked || r.Table != 100 || !r.Routes() {
		t.Errorf("routing = %+v", r)
	}
	if len(r.Include) != 3 || r.Include[2] != netip.MustParsePrefix("192.0.2.7/32") || len(r.Exclude) != 1 {
		t.Errorf("include %v exclude %v", r.Include, r.Exclude)
	}
	wantUIDs := []UIDRange{{1000, 1000}, {2000, 2999}, {3000, 3000}}
	if fmt.Sprint(r.UIDs) != fmt.Sprint(wantUIDs) {
		t.Errorf("uids = %v, want %v", r.UIDs, wantUIDs)
	}
	if len(r.From) != 1 || r.From[0] != "lan0" {
		t.Errorf("from = %v", r.From)
	}

	gw, err := Parse("gw.yaml", []byte("routing:\n  from: [lan0]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if gw.Routing.Mode != "none" || !gw.Routing.Routes() {
		t.Errorf("LAN gateway alone: mode %q routes=%v, want none and true", gw.Routing.Mode, gw.Routing.Routes())
	}
	none, _ := Default()
	if none.Routing.Routes() {
		t.Error("the embedded default installs routes")
	}
}

// TestControlConfig: the TCP listener's address, hosts and token file:
// the token is read from a file others cannot read, relative to the config
// file, and must be one long word.
func TestControlConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(dir, name), mode)
	}
	write("good", "0123456789abcdef0123\nsecond line ignored\n", 0o600)
	write("open", "0123456789abcdef0123\n", 0o644)
	write("short", "abc\n", 0o600)
	write("spaced", "0123456789 abcdef0123\n", 0o640)
	file := filepath.Join(dir, "tunwall.yaml")
	cfg, err := Parse(file, []byte("control:\n  listen: \"[::1]:9190\"\n  token_file: good\n  hosts: [Tunwall.LAN., bücher.example]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Control
	if c.Listen.String() != "[::1]:9190" || c.Token != "0123456789abcdef0123" || c.TokenFile != filepath.Join(dir, "good") ||
		strings.Join(c.Hosts, ",") != "tunwall.lan,xn--bcher-kva.example" {
		t.Errorf("control %+v", c)
	}
	for name, want := range map[string]string{
		"open":   "others may read it (mode 0644)",
		"short":  "the token must be one word of at least 16 characters",
		"spaced": "the token must be one word",
	} {
		_, err := Parse(file, []byte("control:\n  listen: 127.0.0.1:9190\n  token_file: "+name+"\n"))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "tunwall.yaml:3:15:") {
			t.Errorf("token file %s: %v, want %q at 3:15", name, err, want)
		}
	}
}

// TestCaptureConfig: capture is on by default with 64 MiB files and whole
// packets; sizes take binary and decimal units.
func TestCaptureConfig(t *testing.T) {
	cfg, err := Parse("t.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Capture; !c.Enabled || c.MaxBytes != 64<<20 || c.Snaplen != 65535 {
		t.Errorf("default capture %+v", c)
	}
	cfg, err = Parse("t.yaml", []byte("capture: {enabled: false, max_bytes: 2000000, snaplen: 128}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Capture; c.Enabled || c.MaxBytes != 2000000 || c.Snaplen != 128 {
		t.Errorf("capture %+v", c)
	}
	for in, want := range map[string]int64{"1KiB": 1024, "3 MiB": 3 << 20, "2GB": 2e9, "10KB": 10000, "512B": 512, "7": 7} {
		if n, err := ParseSize(in); err != nil || n != want {
			t.Errorf("ParseSize(%q) = %d %v, want %d", in, n, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.5MiB", "9999999999GiB", "1 TB"} {
		if n, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, n)
		}
	}
}

// limits.buffer_memory takes a size, or auto (0: tunwall chooses).
func TestParseBufferMemory(t *testing.T) {
	for in, want := range map[string]int64{"512MiB": 512 << 20, "2GB": 2e9, "auto": 0, "1048576": 1 << 20} {
		cfg, err := Parse("t.yaml", []byte("limits: {buffer_memory: "+in+"}\n"))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if cfg.Limits.BufferMemory != want {
			t.Errorf("%s: BufferMemory = %d, want %d", in, cfg.Limits.BufferMemory, want)
		}
	}
}
