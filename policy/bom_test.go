package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// TestByteOrderMark: a config file and a list saved with a UTF-8 byte
// order mark read as without one, with the same positions in errors.
func TestByteOrderMark(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "nets.txt", "\ufeff10.9.0.0/16\n")
	cfg, err := parseFile(t, dir, "\ufefflists:\n  nets: {file: nets.txt}\npolicy:\n  default: allow\n  rules:\n    - {name: no-nets, action: deny, dst_list: [nets]}\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Policy.Len() != 1 || cfg.Lists[0].Addrs != 1 || !cfg.Lists[0].ContainsAddr(netip.MustParseAddr("10.9.1.1")) {
		t.Errorf("%d rules, list has %d addresses (10.9.1.1 in it: %v); want 1, 1, true",
			cfg.Policy.Len(), cfg.Lists[0].Addrs, cfg.Lists[0].ContainsAddr(netip.MustParseAddr("10.9.1.1")))
	}
	_, err = Parse("bom.yaml", []byte("\ufeffpolicy:\n  bogus: 1\n"))
	if err == nil || err.Error() != `bom.yaml:2:3: unknown field "bogus"` {
		t.Errorf("error %v, want bom.yaml:2:3: unknown field \"bogus\"", err)
	}
}

// TestZeroBytes: a config file of zero bytes is told apart from one that
// holds only a comment, blank lines or an empty mapping.
func TestZeroBytes(t *testing.T) {
	cfg, err := Parse("tunwall.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if zero := cfg.ZeroBytes(); len(zero) != 1 || !strings.HasPrefix(zero.Error(), "tunwall.yaml: the file has 0 bytes") {
		t.Errorf("ZeroBytes of an empty config = %v", zero)
	}
	for _, text := range []string{"# defaults\n", "{}\n", "\n"} {
		cfg, err := Parse("tunwall.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		if zero := cfg.ZeroBytes(); len(zero) != 0 {
			t.Errorf("config %q: ZeroBytes = %v, want none", text, zero)
		}
	}
	if cfg, err := Default(); err != nil || len(cfg.ZeroBytes()) != 0 {
		t.Errorf("embedded default: %v, ZeroBytes %v", err, cfg.ZeroBytes())
	}
}
