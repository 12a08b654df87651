package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// writeFile writes content to name in dir and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const sampleList = `# a blocklist with every kind of line
10.9.0.0/16
192.0.2.7          # one address, comment after it
2001:db8:bad::/48
::ffff:198.51.100.0/120

0.0.0.0 ads.example.com tracker.example.com
127.0.0.1 localhost
::1 localhost ip6-localhost
0.0.0.0 0.0.0.0
evil.example
*.cdn.example
Bücher.Example.
MixedCase.Example` + "\r\n"

func TestListEntries(t *testing.T) {
	dir := t.TempDir()
	l, errs := loadList("sample", writeFile(t, dir, "sample.txt", sampleList), false)
	if errs != nil {
		t.Fatal(errs)
	}
	if l.Addrs != 4 || l.Domains != 6 || l.Skipped != 0 {
		t.Errorf("counted %d addresses, %d domains, %d skipped; want 4, 6, 0", l.Addrs, l.Domains, l.Skipped)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.9.200.1", true}, {"10.10.0.1", false}, {"192.0.2.7", true}, {"192.0.2.8", false},
		{"2001:db8:bad::1", true}, {"2001:db8:bad1::1", false}, {"::ffff:10.9.0.1", true},
		{"198.51.100.9", true}, {"198.51.101.9", false}, {"0.0.0.0", false}, {"127.0.0.1", false},
	} {
		if got := l.ContainsAddr(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("ContainsAddr(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"ads.example.com", true},       // hosts line: that name
		{"x.ads.example.com", false},    // ... only
		{"tracker.example.com", true},   //
		{"example.com", false},          //
		{"evil.example", true},          // plain domain: the name
		{"a.b.evil.example", true},      // and every name below
		{"notevil.example", false},      //
		{"cdn.example", false},          // *.name: only below
		{"img.cdn.example", true},       //
		{"xn--bcher-kva.example", true}, // IDNA, case and trailing dot normalised
		{"mixedcase.example", true},     //
		{"localhost", false},            // hosts-file housekeeping is not an entry
	} {
		if got := l.ContainsDomain(tc.name); got != tc.want {
			t.Errorf("ContainsDomain(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestListBadLines(t *testing.T) {
	dir := t.TempDir()
	content := "10.0.0.0/8\n10.0.0.0/33\nfine.example\nbad_domain!\n1.2.3\n0.0.0.0 ok.example bad!name\nnot-an-ip several fields\n"
	path := writeFile(t, dir, "bad.txt", content)
	_, errs := loadList("bad", path, false)
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{
		path + `:2:1: list "bad": bad CIDR "10.0.0.0/33"`,
		path + `:4:1: list "bad": "bad_domain!" is not an address, CIDR or domain`,
		path + `:5:1: list "bad": bad address "1.2.3"`,
		path + `:6:1: list "bad": "bad!name" is not a host name`,
		path + `:7:1: list "bad": "not-an-ip several fields": a line of several fields must be a hosts line (address, then names)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	l, errs := loadList("bad", path, true)
	if errs != nil {
		t.Fatalf("lenient: %v", errs)
	}
	if l.Skipped != 5 || l.Addrs != 1 || l.Domains != 2 {
		t.Errorf("lenient: %d skipped, %d addresses, %d domains; want 5, 1, 2", l.Skipped, l.Addrs, l.Domains)
	}
}

// parseFile writes a config next to its list files and parses it.
func parseFile(t *testing.T, dir, config string) (*Config, error) {
	t.Helper()
	path := writeFile(t, dir, "tunwall.yaml", config)
	return Load(path)
}

func TestListRules(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "nets.txt", "10.9.0.0/16\n2001:db8:bad::/48\n")
	writeFile(t, dir, "ads.hosts", "0.0.0.0 ads.example.com\n")
	writeFile(t, dir, "clients.txt", "192.168.7.0/24\n")
	cfg, err := parseFile(t, dir, `
lists:
  bad-nets: {file: nets.txt}
  ads: {file: ads.hosts}
  lab: {file: clients.txt}
policy:
  default: allow
  rules:
    - {name: no-ads, action: reject, domain_list: [ads]}
    - {name: named, action: deny, domains: ["Tracker.Example", "*.telemetry.example"]}
    - {name: bad-dst, action: deny, dst: [203.0.113.0/24], dst_list: [bad-nets]}
    - {name: lab-ssh, action: reject, proto: tcp, ports: [22], src_list: [lab]}
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Lists) != 3 || cfg.Lists[0].Name != "ads" || cfg.Lists[0].File != filepath.Join(dir, "ads.hosts") {
		t.Fatalf("lists: %+v", cfg.Lists)
	}
	tcp := func(src, dst, domain string) Flow {
		return Flow{Proto: TCP, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst), Domain: domain}
	}
	for _, tc := range []struct {
		flow Flow
		want string
	}{
		{tcp("192.0.2.1:4000", "198.51.100.1:443", "ads.example.com"), "no-ads"},
		{tcp("192.0.2.1:4000", "198.51.100.1:443", "www.example.com"), DefaultRule},
		{tcp("192.0.2.1:4000", "198.51.100.1:443", ""), DefaultRule},
		{tcp("192.0.2.1:4000", "198.51.100.1:443", "tracker.example"), "named"},
		{tcp("192.0.2.1:4000", "198.51.100.1:443", "eu.telemetry.example"), "named"},
		{tcp("192.0.2.1:4000", "198.51.100.1:443", "telemetry.example"), DefaultRule},
		{tcp("192.0.2.1:4000", "10.9.1.1:443", ""), "bad-dst"},
		{tcp("192.0.2.1:4000", "[2001:db8:bad::9]:443", ""), "bad-dst"},
		{tcp("192.0.2.1:4000", "203.0.113.5:443", ""), "bad-dst"},
		{tcp("192.0.2.1:4000", "10.8.1.1:443", ""), DefaultRule},
		{tcp("192.168.7.20:4000", "198.51.100.1:22", ""), "lab-ssh"},
		{tcp("192.168.8.20:4000", "198.51.100.1:22", ""), DefaultRule},
		{tcp("192.168.7.20:4000", "198.51.100.1:23", ""), DefaultRule},
	} {
		if got := cfg.Policy.Decide(tc.flow); got.Rule != tc.want {
			t.Errorf("%v %s: rule %q, want %q", tc.flow.Dst, tc.flow.Domain, got.Rule, tc.want)
		}
		if n := testing.AllocsPerRun(100, func() { cfg.Policy.Decide(tc.flow) }); n != 0 {
			t.Errorf("%v %s: %v allocations per decision", tc.flow.Dst, tc.flow.Domain, n)
		}
	}
}

func TestListConfigErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "names.txt", "ads.example\n")
	writeFile(t, dir, "nets.txt", "10.0.0.0/8\n")
	writeFile(t, dir, "empty.txt", "# nothing\n")
	writeFile(t, dir, "broken.txt", "10.0.0.0/8\nnot a hosts line\n")
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown list", "policy:\n  rules:\n    - {name: r, action: deny, dst_list: [nope]}\n", `tunwall.yaml:3:42: rule "r": no list "nope" in the lists section`},
		{"domains as addresses", "lists:\n  n: {file: names.txt}\npolicy:\n  rules:\n    - {name: r, action: deny, dst_list: [n]}\n", `rule "r": list "n" holds no addresses`},
		{"addresses as domains", "lists:\n  n: {file: nets.txt}\npolicy:\n  rules:\n    - {name: r, action: deny, domain_list: [n]}\n", `rule "r": list "n" holds no domains`},
		{"missing file", "lists:\n  n: {file: gone.txt}\n", `list "n": open ` + filepath.Join(dir, "gone.txt")},
		{"no file", "lists:\n  n: {lenient: true}\n", `tunwall.yaml:2:7: lists.n: file is required`},
		{"empty list", "lists:\n  n: {file: empty.txt}\n", `lists.n: ` + filepath.Join(dir, "empty.txt") + ` holds no entries`},
		{"bad line", "lists:\n  n: {file: broken.txt}\n", filepath.Join(dir, "broken.txt") + `:2:1: list "n": "not a hosts line": a line of several fields must be a hosts line`},
		{"bad list name", "lists:\n  \"a b\": {file: nets.txt}\n", `lists: "a b": list names are`},
		{"bad domain", "policy:\n  rules:\n    - {name: r, action: deny, domains: [\"exa mple.com\"]}\n", `rule "r": "exa mple.com" is not a domain`},
		{"unknown list key", "lists:\n  n: {path: nets.txt}\n", `unknown field "path"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFile(t, dir, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestListNotLoaded: a list that does not load is reported once, with why
// (its bad lines, the first 20 and a count of the rest; the file's
// problem; no entries), and rules naming it are not told it does not exist.
func TestListNotLoaded(t *testing.T) {
	dir := t.TempDir()
	var many strings.Builder
	for i := range 25 {
		fmt.Fprintf(&many, "10.0.%d.0/33\n", i)
	}
	many.WriteString("0.0.0.0 bad!one bad!two\n10.1.0.0/16\n")
	broken := writeFile(t, dir, "broken.txt", many.String())
	utf16 := writeFile(t, dir, "utf16.txt", "\xff\xfe1\x000\x00.\x000\x00.\x000\x00.\x001\x00\n\x00")
	empty := writeFile(t, dir, "empty.txt", "# nothing yet\n")
	config := writeFile(t, dir, "tunwall.yaml", "lists:\n  many: {file: broken.txt}\n  wide: {file: utf16.txt}\n  none: {file: empty.txt}\npolicy:\n  rules:\n    - {name: r, action: deny, dst_list: [many, wide, none]}\n")
	_, err := Load(config)
	want := []string{
		config + `:2:16: lists.many: ` + broken + ` was not loaded (see below)`,
	}
	for i := range 20 {
		want = append(want, fmt.Sprintf(`%s:%d:1: list "many": bad CIDR "10.0.%d.0/33"`, broken, i+1, i))
	}
	want = append(want,
		broken+`:21:1: list "many": 6 more bad lines from here on not shown`,
		config+`:3:16: lists.wide: `+utf16+` was not loaded (see below)`,
		utf16+`:1:1: list "wide": the file is UTF-16 text; save it as UTF-8`,
		config+`:4:16: lists.none: `+empty+` holds no entries`,
	)
	wantErrors(t, err, want)
}

// bigList writes n entries of one kind: "cidr" (distinct /32 and /24
// networks) or "domain".
func bigList(tb testing.TB, kind string, n int) string {
	var b strings.Builder
	for i := range n {
		switch kind {
		case "cidr":
			if i%4 == 0 {
				fmt.Fprintf(&b, "%d.%d.%d.0/24\n", 1+i>>16&0x7f, i>>8&0xff, i&0xff)
			} else {
				fmt.Fprintf(&b, "%d.%d.%d.%d\n", 128+i>>16&0x3f, i>>8&0xff, i&0xff, 1+i%250)
			}
		default:
			fmt.Fprintf(&b, "0.0.0.0 host%d.tracker%d.example\n", i, i%9973)
		}
	}
	return writeFile(tb, tb.TempDir(), kind+".txt", b.String())
}

func BenchmarkListLookup(b *testing.B) {
	const n = 1_000_000
	b.Run("cidr=1M", func(b *testing.B) {
		l, errs := loadList("big", bigList(b, "cidr", n), false)
		if errs != nil || l.Addrs != n {
			b.Fatal(errs, l.Addrs)
		}
		addrs := []netip.Addr{netip.MustParseAddr("130.1.2.3"), netip.MustParseAddr("9.9.9.9"), netip.MustParseAddr("2.3.4.5"), netip.MustParseAddr("200.1.1.1")}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.ContainsAddr(addrs[i&3])
			i++
		}
	})
	b.Run("domain=1M", func(b *testing.B) {
		l, errs := loadList("big", bigList(b, "domain", n), false)
		if errs != nil || l.Domains != n {
			b.Fatal(errs, l.Domains)
		}
		names := []string{"host777.tracker777.example", "www.example.org", "a.b.host5.tracker5.example", "cdn.images.news.example.com"}
		if !l.ContainsDomain(names[0]) || l.ContainsDomain(names[1]) {
			b.Fatal("wrong answers")
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.ContainsDomain(names[i&3])
			i++
		}
	})
}

// BenchmarkCompileList loads a million-entry list of each kind and reports
// the heap it keeps (targets: 2 s and 300 MB).
func BenchmarkCompileList(b *testing.B) {
	for _, kind := range []string{"cidr", "domain"} {
		b.Run(kind+"=1M", func(b *testing.B) {
			path := bigList(b, kind, 1_000_000)
			var heap float64
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				l, errs := loadList(kind, path, false)
				if errs != nil {
					b.Fatal(errs)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
				runtime.KeepAlive(l)
			}
			b.ReportMetric(heap, "MB-heap")
		})
	}
}

func TestJudgeName(t *testing.T) {
	p := mustParse(t, `
default: allow
rules:
  - {name: lab-may, action: allow, src: [10.9.0.0/16], domains: ["*.ads.test"]}
  - {name: no-ads, action: reject, domains: ["*.ads.test", tracker.test]}
  - {name: web-only, action: deny, proto: tcp, ports: [443], domains: [shop.test]}
  - {name: nights, action: deny, domains: [game.test], when: {time: ["22:00-06:00"], zone: UTC}}
`)
	name := func(src, domain string, hour int) Flow {
		return Flow{Proto: UDP, Src: netip.MustParseAddrPort(src + ":5353"), Dst: netip.MustParseAddrPort("192.0.2.53:53"),
			Domain: domain, At: time.Date(2026, 11, 23, hour, 0, 0, 0, time.UTC)}
	}
	for _, tc := range []struct {
		flow Flow
		rule string // "" when no rule about names decides
	}{
		{name("10.0.0.2", "x.ads.test", 12), "no-ads"},
		{name("10.9.1.1", "x.ads.test", 12), "lab-may"},
		{name("10.0.0.2", "tracker.test", 12), "no-ads"},
		{name("10.0.0.2", "ads.test", 12), ""},
		{name("10.0.0.2", "shop.test", 12), ""}, // a rule with ports judges connections only
		{name("10.0.0.2", "game.test", 23), "nights"},
		{name("10.0.0.2", "game.test", 12), ""},
	} {
		v, ok := p.JudgeName(tc.flow)
		if got := map[bool]string{true: v.Rule}[ok]; got != tc.rule {
			t.Errorf("%s from %s at %d:00: rule %q, want %q", tc.flow.Domain, tc.flow.Src.Addr(), tc.flow.At.Hour(), got, tc.rule)
		}
		if n := testing.AllocsPerRun(20, func() { p.JudgeName(tc.flow) }); n != 0 {
			t.Errorf("%v allocations", n)
		}
	}
}

func TestPrejudgeName(t *testing.T) {
	p := mustParse(t, `
default: allow
rules:
  - {name: ssh, action: allow, proto: tcp, ports: [22]}
  - {name: no-blocked, action: reject, proto: tcp, ports: [443], domains: [blocked.test]}
  - {name: lab-only, action: deny, src: [10.9.0.0/16], domains: [ok.test]}
`)
	flow := func(src, dst string) Flow {
		return Flow{Proto: TCP, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}
	}
	for _, tc := range []struct {
		flow     Flow
		rule     string
		needName bool
	}{
		{flow("10.0.0.2:4000", "192.0.2.1:22"), "ssh", false},
		{flow("10.0.0.2:4000", "192.0.2.1:443"), "", true},
		{flow("10.0.0.2:4000", "192.0.2.1:80"), DefaultRule, false}, // no rule about names can match
		{flow("10.9.0.2:4000", "192.0.2.1:80"), "", true},           // lab-only could
	} {
		v, need := p.PrejudgeName(tc.flow)
		if need != tc.needName || !need && v.Rule != tc.rule {
			t.Errorf("%v -> %v: rule %q needName %v, want %q %v", tc.flow.Src, tc.flow.Dst, v.Rule, need, tc.rule, tc.needName)
		}
		if n := testing.AllocsPerRun(20, func() { p.PrejudgeName(tc.flow) }); n != 0 {
			t.Errorf("%v allocations", n)
		}
	}
}
