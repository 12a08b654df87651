package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the config parser: it must never panic,
// and any accepted file must compile into a policy that can decide.
func FuzzParse(f *testing.F) {
	f.Add(defaultYAML)
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("policy:\n  rules:\n    - {name: a, action: allow, ports: [\"1-2\"], proto: tcp}\n"))
	f.Add([]byte("tun: {mtu: 0x10}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			if _, ok := AsErrors(err); !ok {
				t.Fatalf("error is not positioned: %v", err)
			}
			return
		}
		fl := Flow{Proto: TCP, Src: netip.MustParseAddrPort("10.0.0.1:1"), Dst: netip.MustParseAddrPort("10.0.0.2:80")}
		_ = cfg.Policy.Decide(fl)
	})
}

// FuzzList feeds arbitrary text to the list parser: no panic, every error
// names a line, and what was accepted answers lookups.
func FuzzList(f *testing.F) {
	f.Add(sampleList)
	f.Add("10.0.0.0/8\n::ffff:1.2.3.0/120\n0.0.0.0 a.example b.example\n*.x.example\n")
	f.Add("1.2.3\n\xff\xfe.example\n#\n\t\r\n")
	f.Fuzz(func(t *testing.T, text string) {
		l, errs := parseList("fuzz", "fuzz.txt", text, false)
		for _, e := range errs {
			if e.Line == 0 {
				t.Fatalf("error without a line: %v", e)
			}
		}
		if l != nil {
			l.ContainsAddr(netip.MustParseAddr("10.1.2.3"))
			l.ContainsDomain("a.b.example")
		}
		if _, errs := parseList("fuzz", "fuzz.txt", text, true); errs != nil {
			t.Fatalf("lenient parse failed: %v", errs)
		}
	})
}
