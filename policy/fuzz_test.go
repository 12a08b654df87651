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
