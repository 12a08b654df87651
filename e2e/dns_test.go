package e2e

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/tunwall/tunwall/e2e/lab"
)

type resolution struct {
	OK    bool     `json:"ok"`
	Rcode string   `json:"rcode"`
	Addrs []string `json:"addrs"`
	Error string   `json:"error"`
}

func resolveIn(t *testing.T, l *lab.Lab, ns, server, name string) resolution {
	t.Helper()
	return resolveType(t, l, ns, server, name, "A")
}

// resolveType asks server for name's record of type qtype (A or AAAA).
func resolveType(t *testing.T, l *lab.Lab, ns, server, name, qtype string) resolution {
	t.Helper()
	var r resolution
	runJSON(t, l, ns, &r, filepath.Join(bin, "twlab"), "resolve", server, name, qtype)
	return r
}

// TestDNSNames: a rule about a name answers queries for it NXDOMAIN from
// tunwall (logged as a dns event); another name resolves through the lab's
// DNS server, and a later connection to the address it gave carries the
// name (domain_source dns) and is judged by a rule naming it.
func TestDNSNames(t *testing.T) {
	l := routedLab(t, "twd")
	gw := l.Gateway
	tw := launch(t, l, routed("debug", `policy:
  default: allow
  rules:
    - {name: no-blocked, action: reject, domains: [blocked.test]}
    - {name: no-ok-web, action: reject, proto: tcp, ports: [8080], domains: [ok.test]}
`))
	dns := hostPort(lab.ServerV4, "53")
	if r := resolveIn(t, l, gw, dns, "blocked.test"); !r.OK || r.Rcode != "Non-Existent Domain" || len(r.Addrs) != 0 {
		t.Errorf("blocked.test: %+v, want NXDOMAIN", r)
	}
	ev := waitEvent(t, tw.Log, func(e event) bool { return e.str("event") == "dns" })
	if ev.str("domain") != "blocked.test" || ev.str("rule") != "no-blocked" || ev.str("action") != "reject" || ev.str("qtype") != "A" {
		t.Errorf("dns event %v", ev)
	}
	if r := resolveIn(t, l, gw, dns, "ok.test"); !r.OK || r.Rcode != "No Error" || !slices.Equal(r.Addrs, []string{lab.ServerV4}) {
		t.Errorf("ok.test: %+v, want %s", r, lab.ServerV4)
	}
	web := hostPort(lab.ServerV4, "8080")
	// The verdict can depend on the name, so the connection is accepted
	// and its first bytes read; they carry no name, the one from DNS
	// decides, and the connection is reset.
	if r := probe(t, l, gw, 0, "tcp", web); r.OK || r.Errno != "ECONNRESET" {
		t.Errorf("tcp to ok.test:8080: %+v, want ECONNRESET", r)
	}
	e := wantVerdict(t, tw.Log, "tcp", web, "reject", "no-ok-web")
	if e.str("domain") != "ok.test" || e.str("domain_source") != "dns" {
		t.Errorf("verdict domain %q source %q, want ok.test from dns", e.str("domain"), e.str("domain_source"))
	}
	// The lab's other services on that address are not about ok.test's web
	// port: they go through, and carry the name too.
	echo := hostPort(lab.ServerV4, "7001")
	wantOK(t, probe(t, l, gw, 0, "tcp", echo), "tcp echo on ok.test's address")
	if e := wantVerdict(t, tw.Log, "tcp", echo, "allow", "default"); e.str("domain") != "ok.test" {
		t.Errorf("echo verdict domain %q, want ok.test", e.str("domain"))
	}
}

// TestDNSZeroAnswerAndCacheSize: with dns.blocked_answer: zero a refused
// name resolves to 0.0.0.0 (A) and :: (AAAA); with dns.cache_size: 1 the
// name an answer gave an address is forgotten once another answer fills
// the one entry, and flows to that address no longer carry it.
func TestDNSZeroAnswerAndCacheSize(t *testing.T) {
	l := routedLab(t, "twdz")
	gw := l.Gateway
	tw := launch(t, l, routed("debug", `dns: {blocked_answer: zero, cache_size: 1}
policy:
  default: allow
  rules:
    - {name: no-blocked, action: reject, domains: [blocked.test]}
`))
	dns4, dns6 := hostPort(lab.ServerV4, "53"), hostPort(lab.ServerV6, "53")
	if r := resolveType(t, l, gw, dns4, "blocked.test", "A"); !r.OK || r.Rcode != "No Error" || !slices.Equal(r.Addrs, []string{"0.0.0.0"}) {
		t.Errorf("blocked.test A: %+v, want 0.0.0.0", r)
	}
	if r := resolveType(t, l, gw, dns6, "blocked.test", "AAAA"); !r.OK || r.Rcode != "No Error" || !slices.Equal(r.Addrs, []string{"::"}) {
		t.Errorf("blocked.test AAAA: %+v, want ::", r)
	}
	for i, want := range []string{"A", "AAAA"} {
		if ev := waitNth(t, tw.Log, func(e event) bool { return e.str("event") == "dns" }, i+1, "dns event"); ev.str("domain") != "blocked.test" || ev.str("qtype") != want || ev.str("rule") != "no-blocked" {
			t.Errorf("dns event %v, want blocked.test %s by no-blocked", ev, want)
		}
	}

	// The cache's one entry: ok.test's IPv4 address, then ok6.test's IPv6
	// one in its place.
	echo4, echo6 := hostPort(lab.ServerV4, "7001"), hostPort(lab.ServerV6, "7001")
	echoTo := func(addr string, n int, domain string) {
		t.Helper()
		wantOK(t, probe(t, l, gw, 0, "tcp", addr), "tcp echo to "+addr)
		if ev := waitNth(t, tw.Log, verdictTo("tcp", addr), n, "verdict to "+addr); ev.str("domain") != domain {
			t.Errorf("verdict #%d to %s: domain %q, want %q", n, addr, ev.str("domain"), domain)
		}
	}
	if r := resolveType(t, l, gw, dns4, "ok.test", "A"); !r.OK || !slices.Equal(r.Addrs, []string{lab.ServerV4}) {
		t.Fatalf("ok.test A: %+v, want %s", r, lab.ServerV4)
	}
	echoTo(echo4, 1, "ok.test")
	if r := resolveType(t, l, gw, dns6, "ok6.test", "AAAA"); !r.OK || !slices.Equal(r.Addrs, []string{lab.ServerV6}) {
		t.Fatalf("ok6.test AAAA: %+v, want %s", r, lab.ServerV6)
	}
	echoTo(echo6, 1, "ok6.test")
	echoTo(echo4, 2, "")
}

// TestSNINames: a TLS client naming blocked.test is reset after its
// ClientHello although the address is allowed; one naming ok.test reaches
// the service (which is not TLS, so the handshake fails there). The
// verdicts carry the names with domain_source sni.
func TestSNINames(t *testing.T) {
	l := routedLab(t, "tws")
	gw := l.Gateway
	tw := launch(t, l, routed("debug", `policy:
  default: allow
  rules:
    - {name: no-blocked-tls, action: reject, proto: tcp, domains: [blocked.test]}
`))
	addr := hostPort(lab.ServerV4, "7001")
	tlsProbe := func(name string) probeResult {
		var r probeResult
		runJSON(t, l, gw, &r, filepath.Join(bin, "twlab"), "tls", addr, name)
		return r
	}
	if r := tlsProbe("blocked.test"); r.OK || r.Errno != "ECONNRESET" {
		t.Errorf("TLS naming blocked.test: %+v, want a reset", r)
	}
	e := expectVerdict(t, tw.Log, func(e event) bool { return e.str("event") == "verdict" && e.str("domain") == "blocked.test" }, "tls blocked.test", "reject", "no-blocked-tls")
	if e.str("domain_source") != "sni" || e.str("dst") != addr {
		t.Errorf("verdict %v, want sni to %s", e, addr)
	}
	if r := tlsProbe("ok.test"); r.Errno == "ECONNRESET" {
		t.Errorf("TLS naming ok.test: %+v, want it to reach the service", r)
	}
	e = expectVerdict(t, tw.Log, func(e event) bool { return e.str("event") == "verdict" && e.str("domain") == "ok.test" }, "tls ok.test", "allow", "default")
	if e.str("domain_source") != "sni" {
		t.Errorf("verdict %v, want sni", e)
	}
}
