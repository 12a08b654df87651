package names

import (
	"errors"
	"testing"

	"github.com/google/gopacket/layers"
)

// FuzzDNS: no input panics; bytes behind a query in its buffer change
// nothing; a query that parses can be answered as blocked, and the answer
// parses as a response to the same name.
func FuzzDNS(f *testing.F) {
	f.Add(query(f, "ads.example.com", layers.DNSTypeA))
	f.Add(query(f, "x.test", layers.DNSTypeAAAA))
	f.Add([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c})
	whole := query(f, "x.test", layers.DNSTypeA)
	f.Add(whole[: len(whole)-4 : len(whole)-4]) // without its type and class
	f.Fuzz(func(t *testing.T, msg []byte) {
		Answer(msg)
		q, err := ParseQuery(msg)
		// The same message with other bytes behind it in its buffer, as
		// in a reused read buffer, reads the same.
		padded := append(append([]byte(nil), msg...), 0, 1, 0, 1, 0xc0, 0x0c)[:len(msg)]
		if q2, err2 := ParseQuery(padded); q2 != q || (err2 == nil) != (err == nil) {
			t.Fatalf("with bytes behind it the message reads as %+v (%v), alone as %+v (%v)", q2, err2, q, err)
		}
		if err != nil {
			return
		}
		for _, zero := range []bool{false, true} {
			b, err := Blocked(msg, zero, 60)
			if err != nil {
				continue // a question gopacket reads but cannot write back
			}
			if _, _, err := Answer(b); err != nil {
				t.Fatalf("our own answer to %q does not parse: %v", q.Name, err)
			}
		}
	})
}

// FuzzServerName: no input panics, and a ClientHello cut short asks for
// more rather than failing.
func FuzzServerName(f *testing.F) {
	hello := clientHello(f, "blocked.test")
	f.Add(hello, len(hello)/2)
	f.Add([]byte{22, 3, 1, 0, 5, 1, 0, 0, 1, 0}, 3)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		name, err := ServerName(b)
		if err == nil && cut >= 0 && cut < len(b) {
			if _, err := ServerName(b[:cut]); err != nil && !errors.Is(err, ErrMore) && name != "" {
				// A prefix of a ClientHello with a name is never "not TLS":
				// only the full record can say so.
				t.Fatalf("prefix %d of a ClientHello naming %q: %v", cut, name, err)
			}
		}
	})
}

// FuzzHTTPHost: no input panics; a host found is found again with more
// bytes after the header block.
func FuzzHTTPHost(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n"))
	f.Add([]byte("PUT /a HTTP/1.0\r\nhost:[::1]:8\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		host, err := HTTPHost(b)
		if err == nil && host == "" {
			t.Fatal("no error and no host")
		}
	})
}
