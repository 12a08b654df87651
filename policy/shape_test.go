package policy

import (
	"reflect"
	"strings"
	"testing"

	"github.com/goccy/go-yaml/parser"
)

// TestValueShapes: a value that does not have its setting's shape is an
// error naming the setting and what was written, never truncated or
// converted quietly, and every such error in a file is reported.
func TestValueShapes(t *testing.T) {
	bad := []struct {
		name, yaml string
		want       []string
	}{
		{"fraction", "tun:\n  mtu: 1500.5\n", []string{`t.yaml:2:8: tun.mtu: 1500.5 is not a whole number`}},
		{"whole number tagged as a float", "tun:\n  mtu: !!float 1500\n", []string{`t.yaml:2:8: tun.mtu: !!float 1500 is not a whole number`}},
		{"float for a size", "capture:\n  max_bytes: 5000000.0\n", []string{`t.yaml:2:14: capture.max_bytes: "5000000.0" is not a size (such as 64MiB or 1000000)`}},
		{"fractions everywhere", "limits:\n  max_flows: 10.9\n  max_udp_sessions: 2.0\ncapture:\n  snaplen: 1e3\n", []string{
			`t.yaml:2:14: limits.max_flows: 10.9 is not a whole number`,
			`t.yaml:3:21: limits.max_udp_sessions: 2.0 is not a whole number`,
			`t.yaml:5:12: capture.snaplen: want a whole number, got "1e3"`,
		}},
		{"word for a number", "dns:\n  cache_size: many\n", []string{`t.yaml:2:15: dns.cache_size: want a whole number, got "many"`}},
		{"yes for a number", "routing:\n  table: true\n", []string{`t.yaml:2:10: routing.table: want a whole number, got true`}},
		{"huge number", "limits:\n  max_flows: 99999999999999999999\n", []string{`t.yaml:2:14: limits.max_flows: 99999999999999999999 is out of range`}},
		{"past int64", "limits:\n  max_flows: 9223372036854775808\n", []string{`t.yaml:2:14: limits.max_flows: 9223372036854775808 is out of range`}},
		{"yes for true", "routing:\n  strict: yes\n", []string{`t.yaml:2:11: routing.strict: want true or false, got "yes"`}},
		{"number for true", "capture:\n  enabled: 1\n", []string{`t.yaml:2:12: capture.enabled: want true or false, got 1`}},
		{"quoted true", "routing:\n  keep_blocked: \"true\"\n", []string{`t.yaml:2:17: routing.keep_blocked: want true or false, got "true"`}},
		{"list for a text", "tun:\n  name: [a, b]\n", []string{`t.yaml:2:9: tun.name: want a single value, got a list`}},
		{"text for a list", "routing:\n  from: eth0\n", []string{`t.yaml:2:9: routing.from: want a list like [a, b], got "eth0"`}},
		{"list in a list", "routing:\n  exclude: [[10.0.0.0/8]]\n", []string{`t.yaml:2:13: routing.exclude[0]: want a single value, got a list`}},
		{"value for a section", "tun: 5\n", []string{`t.yaml:1:6: tun: want settings (key: value lines), got 5`}},
		{"value for lists", "lists: none\n", []string{`t.yaml:1:8: lists: want entries (name: value lines), got "none"`}},
		{"list entry", "lists:\n  ads:\n    file: /x\n    lenient: maybe\n", []string{`t.yaml:4:14: lists.ads.lenient: want true or false, got "maybe"`}},
		{"rules by name and number", "policy:\n  rules:\n    - {name: web, action: allow, log: yes}\n    - {action: allow, log: 2}\n", []string{
			`t.yaml:3:39: rule "web": log: want true or false, got "yes"`,
			`t.yaml:4:28: rule #2: log: want true or false, got 2`,
		}},
		{"block text", "tun:\n  mtu: |\n    1500\n", []string{`t.yaml:2:8: tun.mtu: want a whole number, got a block of text`}},
		{"keys that are not names", "1: 2\ntun: {true: x, ~: 1}\npolicy:\n  rules:\n    - {name: a, action: allow, 5: x}\n", []string{
			`t.yaml:1:1: the file: unknown field 1 (a setting's name is text)`,
			`t.yaml:2:7: tun: unknown field true (a setting's name is text)`,
			`t.yaml:2:16: tun: unknown field ~ (a setting's name is text)`,
			`t.yaml:5:32: rule "a": unknown field 5 (a setting's name is text)`,
		}},
		{"merged settings", "<<: {tun: {mtu: 1400.5}}\nrouting:\n  <<: {strict: yes}\npolicy:\n  rules:\n    - {name: a, action: allow, <<: {log: 1}}\n", []string{
			`t.yaml:1:17: tun.mtu: 1400.5 is not a whole number`,
			`t.yaml:3:16: routing.strict: want true or false, got "yes"`,
			`t.yaml:6:42: rule "a": log: want true or false, got 1`,
		}},
		{"merged list", "tun:\n  <<: [{mtu: 1400}]\n", []string{`t.yaml:2:7: tun: want settings (key: value lines), got a list`}},
		{"explicit key", "tun:\n  ? mtu\n  : 1400.5\n", []string{`t.yaml:3:5: tun.mtu: 1400.5 is not a whole number`}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			wantErrors(t, err, tt.want)
		})
	}

	// What YAML writes as a whole number, a yes/no or nothing stays fine.
	cfg, err := Parse("t.yaml", []byte("tun:\n  mtu: 0x5dc\n  queue_length: \"1000\"\nlimits:\n  max_flows: 1_000\n  max_udp_sessions: \"500\"\n  max_pending_tcp:\nrouting:\n  strict: false\ncapture:\n  enabled: TRUE\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tun.MTU != 1500 || cfg.Tun.QueueLength != 1000 || cfg.Limits.MaxFlows != 1000 || cfg.Limits.MaxUDPSessions != 500 || cfg.Limits.MaxPendingTCP != 4096 || cfg.Routing.Strict || !cfg.Capture.Enabled {
		t.Errorf("tun %+v, limits %+v, strict %v, capture %v", cfg.Tun, cfg.Limits, cfg.Routing.Strict, cfg.Capture.Enabled)
	}
}

// FuzzShapes walks arbitrary YAML against the config's shape: no panic
// (Parse would turn one into an error without a position), and every
// error it reports has a position.
func FuzzShapes(f *testing.F) {
	f.Add([]byte("tun: {mtu: 1500.5, name: [a]}\npolicy: {rules: [{name: a, log: 1}, 5, [x]]}\nlists: {a: 3, b: {lenient: x}}\n"))
	f.Add([]byte("tun: &t {mtu: *t}\nrouting: !!map {strict: yes}\n"))
	f.Add([]byte("--- !!map\n!!str tun: {mtu: !!int \"5\", name: !!str}\npolicy: {rules: [{name: !!str 1, ports: [!!float 1, !x 2, &a !!null]}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := parser.ParseBytes(data, 0)
		if err != nil {
			return
		}
		for _, doc := range file.Docs {
			_, errs := shapes("fuzz.yaml", doc.Body)
			for _, e := range errs {
				if e.Line == 0 {
					t.Fatalf("error without a position: %v", e)
				}
			}
		}
	})
}

// TestTags: a YAML core tag on a value it fits is read as if the value had
// been written without it (!!str making the value text), and any other tag,
// or a core tag on a value it does not fit, is an error naming the setting.
func TestTags(t *testing.T) {
	bad := []struct {
		name, yaml string
		want       []string
	}{
		{"int on a word", "tun:\n  mtu: !!int x\n", []string{`t.yaml:2:8: tun.mtu: "x" does not fit its tag !!int`}},
		{"bool on a number", "routing:\n  strict: !!bool 1\n", []string{`t.yaml:2:11: routing.strict: 1 does not fit its tag !!bool`}},
		{"null on a number", "tun:\n  mtu: !!null 5\n", []string{`t.yaml:2:8: tun.mtu: 5 does not fit its tag !!null`}},
		{"int past the range", "limits:\n  max_flows: !!int 99999999999999999999\n", []string{`t.yaml:2:14: limits.max_flows: 99999999999999999999 is out of range`}},
		{"int on a fraction", "tun:\n  mtu: !!int \"1500.0\"\n", []string{`t.yaml:2:8: tun.mtu: "1500.0" does not fit its tag !!int`}},
		{"bool on yes", "routing:\n  strict: !!bool yes\n", []string{`t.yaml:2:11: routing.strict: "yes" does not fit its tag !!bool`}},
		{"float on a word", "tun:\n  mtu: !!float \"big\"\n", []string{`t.yaml:2:8: tun.mtu: "big" does not fit its tag !!float`}},
		{"local tag", "tun:\n  name: !env TUN\n", []string{`t.yaml:2:9: tun.name: the tag !env is not supported (write the value without it)`}},
		{"other core tags", "tun:\n  mtu: !!binary aGk=\nlimits:\n  tcp_idle: !!timestamp 2001-12-14\n", []string{
			`t.yaml:2:8: tun.mtu: the tag !!binary is not supported (write the value without it)`,
			`t.yaml:4:13: limits.tcp_idle: the tag !!timestamp is not supported (write the value without it)`,
		}},
		{"in a rule's ports", "policy:\n  rules:\n    - {name: web, action: allow, proto: tcp, ports: [80, !x 443]}\n", []string{
			`t.yaml:3:58: rule "web": ports[1]: the tag !x is not supported (write the value without it)`,
		}},
		{"tagged key", "tun:\n  !x mtu: 1400\n", []string{`t.yaml:2:3: tun: the key mtu has the tag !x; write the key without it`}},
		{"tagged section", "tun: !!seq [1]\n", []string{`t.yaml:1:11: tun: want settings (key: value lines), got a list`}},
		{"tagged file", "--- !!seq\n- 1\n", []string{`t.yaml:2:1: the file must be a mapping of sections (tun, routing, egress, limits, log, policy)`}},
		{"file with a local tag", "--- !cfg\ntun: {mtu: 1400}\n", []string{`t.yaml:1:5: the file: the tag !cfg is not supported (write the value without it)`}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			wantErrors(t, err, tt.want)
		})
	}

	// The same config written with fitting tags and without any.
	tagged := `--- !!map
!!str tun: !!map
  !!str mtu: !!int 1400
  name: !!str 0x1f
  addresses: !!seq [!!str 10.9.0.1/30]
  queue_length: !!str 1000
limits:
  tcp_idle: !!str 30m
  max_flows: &m !!int 300
  max_udp_sessions: *m
  max_pending_tcp: !!int &p 200
  max_flows_per_source: *p
routing:
  strict: !!bool "false"
  keep_blocked: !!bool TRUE
egress:
  mark: !!str 0x10
policy:
  default: !!str deny
  rules:
    - name: !!str web
      action: !!str allow
      proto: !!str tcp
      ports: [!!int 443, !!str 8000-8100, !!int "80"]
      log: !!bool true
    - {name: pingers, action: allow, proto: !!str icmp}
`
	plain := `tun:
  mtu: 1400
  name: "0x1f"
  addresses: [10.9.0.1/30]
  queue_length: "1000"
limits:
  tcp_idle: 30m
  max_flows: 300
  max_udp_sessions: 300
  max_pending_tcp: 200
  max_flows_per_source: 200
routing:
  strict: false
  keep_blocked: true
egress:
  mark: "0x10"
policy:
  default: deny
  rules:
    - name: web
      action: allow
      proto: tcp
      ports: [443, 8000-8100, 80]
      log: true
    - {name: pingers, action: allow, proto: icmp}
`
	got, err := Parse("t.yaml", []byte(tagged))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Parse("t.yaml", []byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	// Rules keep the lines they were written on, so the policies are
	// compared by their verdicts below.
	p := got.Policy
	got.Hash, got.Size, got.Policy, want.Hash, want.Size, want.Policy = "", 0, nil, "", 0, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tagged config read as\n%+v\nwithout tags\n%+v", got, want)
	}
	if got.Tun.MTU != 1400 || got.Tun.QueueLength != 1000 || got.Limits.MaxUDPSessions != 300 || got.Limits.MaxFlowsPerSource != 200 || got.Egress.Mark != 16 {
		t.Errorf("tun %+v, limits %+v, egress %+v", got.Tun, got.Limits, got.Egress)
	}
	for _, f := range []struct {
		flow Flow
		rule string
	}{
		{flow(TCP, "10.9.0.2:5000", "192.0.2.1:8050"), "web"},
		{flow(TCP, "10.9.0.2:5000", "192.0.2.1:80"), "web"},
		{flow(TCP, "10.9.0.2:5000", "192.0.2.1:81"), "default"},
		{flow(ICMP, "10.9.0.2", "192.0.2.1"), "pingers"},
	} {
		if v := p.Decide(f.flow); v.Rule != f.rule {
			t.Errorf("%v: rule %q, want %q", f.flow, v.Rule, f.rule)
		}
	}
}

// wantErrors checks that err is exactly the errors want, in order.
func wantErrors(t *testing.T, err error, want []string) {
	t.Helper()
	errs, ok := AsErrors(err)
	if !ok {
		t.Fatalf("got %v, want errors %q", err, want)
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
