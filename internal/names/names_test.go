package names

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func dnsMsg(t testing.TB, d *layers.DNS) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := d.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func query(t testing.TB, name string, typ layers.DNSType) []byte {
	return dnsMsg(t, &layers.DNS{ID: 0x4242, RD: true, Questions: []layers.DNSQuestion{{Name: []byte(name), Type: typ, Class: layers.DNSClassIN}}})
}

func TestDNSQueryAndBlocked(t *testing.T) {
	q, err := ParseQuery(query(t, "Ads.Example.COM", layers.DNSTypeA))
	if err != nil || q.ID != 0x4242 || q.Name != "ads.example.com" || q.Type != layers.DNSTypeA {
		t.Fatalf("ParseQuery: %+v %v", q, err)
	}
	for _, tc := range []struct {
		typ   layers.DNSType
		zero  bool
		rcode layers.DNSResponseCode
		addr  string // "" for no answer
	}{
		{layers.DNSTypeA, false, layers.DNSResponseCodeNXDomain, ""},
		{layers.DNSTypeAAAA, false, layers.DNSResponseCodeNXDomain, ""},
		{layers.DNSTypeA, true, layers.DNSResponseCodeNoErr, "0.0.0.0"},
		{layers.DNSTypeAAAA, true, layers.DNSResponseCodeNoErr, "::"},
		{layers.DNSTypeMX, true, layers.DNSResponseCodeNoErr, ""},
	} {
		b, err := Blocked(query(t, "ads.example.com", tc.typ), tc.zero, 60)
		if err != nil {
			t.Fatal(err)
		}
		var d layers.DNS
		if err := d.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
			t.Fatal(err)
		}
		if d.ID != 0x4242 || !d.QR || !d.RD || d.ResponseCode != tc.rcode || len(d.Questions) != 1 {
			t.Errorf("%v zero=%v: %+v", tc.typ, tc.zero, d)
		}
		if got := ""; len(d.Answers) > 0 {
			a, _ := netip.AddrFromSlice(d.Answers[0].IP)
			if got = a.String(); got != tc.addr || d.Answers[0].TTL != 60 {
				t.Errorf("%v zero=%v: answer %s ttl %d, want %s", tc.typ, tc.zero, got, d.Answers[0].TTL, tc.addr)
			}
		} else if tc.addr != "" {
			t.Errorf("%v zero=%v: no answer, want %s", tc.typ, tc.zero, tc.addr)
		}
	}
	if _, err := ParseQuery([]byte{1, 2, 3}); err == nil {
		t.Error("a 3-byte message parsed")
	}
	resp := dnsMsg(t, &layers.DNS{ID: 1, QR: true, Questions: []layers.DNSQuestion{{Name: []byte("a.example"), Type: layers.DNSTypeA, Class: layers.DNSClassIN}}})
	if _, err := ParseQuery(resp); err == nil {
		t.Error("a response parsed as a query")
	}
}

// A label holding a dot is not the names its text reads as: the query for
// "ads.example" under "com" is not a query for ads.example.com, and an
// answer tunwall wrote for it would carry a different question.
func TestDNSDotInLabel(t *testing.T) {
	wire := func(labels ...string) []byte {
		msg := []byte{0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
		for _, l := range labels {
			msg = append(append(msg, byte(len(l))), l...)
		}
		return append(msg, 0, 0, 1, 0, 1) // end of name, type A, class IN
	}
	if q, err := ParseQuery(wire("ads", "example", "com")); err != nil || q.Name != "ads.example.com" {
		t.Fatalf("plain labels: %+v %v", q, err)
	}
	for _, labels := range [][]string{{"ads.example", "com"}, {"a", "b."}, {".", "com"}} {
		msg := wire(labels...)
		if q, err := ParseQuery(msg); err == nil {
			t.Errorf("labels %q parsed as %q", labels, q.Name)
		}
		if _, err := Blocked(msg, true, 60); err == nil {
			t.Errorf("labels %q: an answer was built", labels)
		}
	}
	// A response to such a question teaches nothing.
	resp := wire("ads.example", "com")
	resp[2] = 0x81 // QR, RD
	resp[7] = 1    // one answer
	resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
	if name, addrs, err := Answer(resp); name != "" || len(addrs) != 0 {
		t.Errorf("Answer learned %q -> %v (%v)", name, addrs, err)
	}
}

// A message cut short inside a larger buffer is malformed: the bytes past
// its end, left from an earlier message, are not read as its own.
func TestDNSCutShortInBuffer(t *testing.T) {
	full := query(t, "ads.example.com", layers.DNSTypeA)
	cut := full[:len(full)-4] // no type and class; the buffer still holds them
	if q, err := ParseQuery(cut); err == nil {
		t.Errorf("a query without its type and class parsed: %+v", q)
	}
	if _, err := Blocked(cut, false, 60); err == nil {
		t.Error("an answer was built for a query without its type and class")
	}
}

func TestDNSAnswer(t *testing.T) {
	rr := func(name string, typ layers.DNSType, ip string, cname string) layers.DNSResourceRecord {
		r := layers.DNSResourceRecord{Name: []byte(name), Type: typ, Class: layers.DNSClassIN, TTL: 300}
		if ip != "" {
			r.IP = netip.MustParseAddr(ip).AsSlice()
		}
		if cname != "" {
			r.CNAME = []byte(cname)
		}
		return r
	}
	msg := dnsMsg(t, &layers.DNS{ID: 7, QR: true, Questions: []layers.DNSQuestion{{Name: []byte("www.Example.com"), Type: layers.DNSTypeA, Class: layers.DNSClassIN}},
		Answers: []layers.DNSResourceRecord{
			rr("www.example.com", layers.DNSTypeCNAME, "", "edge.cdn.example"),
			rr("edge.cdn.example", layers.DNSTypeCNAME, "", "e1.cdn.example"),
			rr("e1.cdn.example", layers.DNSTypeA, "192.0.2.10", ""),
			rr("e1.cdn.example", layers.DNSTypeAAAA, "2001:db8::10", ""),
			rr("unrelated.example", layers.DNSTypeA, "192.0.2.99", ""),
		}})
	name, addrs, err := Answer(msg)
	if err != nil || name != "www.example.com" || len(addrs) != 2 || addrs[0].Addr.String() != "192.0.2.10" || addrs[1].Addr.String() != "2001:db8::10" || addrs[0].TTL != 300 {
		t.Fatalf("Answer: %q %+v %v", name, addrs, err)
	}
	nx := dnsMsg(t, &layers.DNS{ID: 7, QR: true, ResponseCode: layers.DNSResponseCodeNXDomain, Questions: []layers.DNSQuestion{{Name: []byte("x.example"), Type: layers.DNSTypeA, Class: layers.DNSClassIN}}})
	if _, addrs, err := Answer(nx); err != nil || addrs != nil {
		t.Errorf("NXDOMAIN: %+v %v", addrs, err)
	}
}

// clientHello captures what a real TLS client sends first.
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Handshake()
	}()
	buf := make([]byte, 16<<10)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestServerName(t *testing.T) {
	hello := clientHello(t, "Blocked.Test")
	if name, err := ServerName(hello); err != nil || name != "Blocked.Test" {
		t.Fatalf("ServerName: %q %v", name, err)
	}
	for _, n := range []int{0, 1, 4, 5, 9, 40, len(hello) / 2, len(hello) - 1} {
		if _, err := ServerName(hello[:n]); !errors.Is(err, ErrMore) {
			t.Errorf("first %d of %d bytes: %v, want ErrMore", n, len(hello), err)
		}
	}
	if name, err := ServerName(clientHello(t, "")); err != nil || name != "" {
		t.Errorf("no SNI: %q %v", name, err)
	}
	for _, b := range [][]byte{[]byte("GET / HTTP/1.1\r\n"), []byte("\x00raw"), {22, 4}, {22, 3, 1, 0, 0}, {22, 3, 1, 0, 4, 2, 0, 0, 0}} {
		if _, err := ServerName(b); err == nil || errors.Is(err, ErrMore) {
			t.Errorf("%q: %v, want not TLS", b, err)
		}
	}
}

func TestHTTPHost(t *testing.T) {
	for _, tc := range []struct {
		in, host string
		more     bool
	}{
		{"GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n", "ok.test", false},
		{"POST /x HTTP/1.1\r\nUser-Agent: a\r\nhost: Blocked.Test:8080\r\nAccept: */*\r\n\r\nbody", "Blocked.Test", false},
		{"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", "2001:db8::1", false},
		{"GET / HTTP/1.1\r\nHost: ok.test\r\n", "ok.test", false},
		{"GET / HTTP/1.1\r\nHost: ok.te", "", true}, // the line may go on
		{"GET / HTTP/1.1\r\n", "", true},
		{"GE", "", true},
		{"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "", false}, // no Host
		{"\x16\x03\x01\x00", "", false},
		{"get / HTTP/1.1\r\n", "", false},
	} {
		host, err := HTTPHost([]byte(tc.in))
		if host != tc.host || errors.Is(err, ErrMore) != tc.more || (tc.host == "" && err == nil) {
			t.Errorf("%q: %q %v, want %q (more %v)", tc.in, host, err, tc.host, tc.more)
		}
	}
}
