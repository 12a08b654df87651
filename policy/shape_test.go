package policy

import (
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
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			errs, ok := AsErrors(err)
			if !ok {
				t.Fatalf("Parse: %v, want errors %q", err, tt.want)
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
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
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := parser.ParseBytes(data, 0)
		if err != nil {
			return
		}
		for _, doc := range file.Docs {
			for _, e := range shapes("fuzz.yaml", doc.Body) {
				if e.Line == 0 {
					t.Fatalf("error without a position: %v", e)
				}
			}
		}
	})
}
