package names

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// decode parses a DNS message. gopacket's decoder has panicked on some
// malformed messages (found by FuzzDNS); those are errors here, and so is
// a question whose name is not in plain labels (see plainQuestion).
func decode(msg []byte) (d *layers.DNS, err error) {
	defer func() {
		if r := recover(); r != nil {
			d, err = nil, fmt.Errorf("malformed DNS message (%v)", r)
		}
	}()
	// gopacket slices past a message's length when the slice has room
	// beyond it: a message cut short in a reused read buffer would be
	// completed with the bytes of an earlier one (found by FuzzDNS).
	msg = msg[:len(msg):len(msg)]
	d = new(layers.DNS)
	if err := d.DecodeFromBytes(msg, gopacket.NilDecodeFeedback); err != nil {
		return nil, err
	}
	if len(d.Questions) > 0 && !plainQuestion(msg) {
		return nil, errors.New("question name not in plain labels")
	}
	return d, nil
}

// plainQuestion reports whether the first question's name is written as
// plain labels, none holding a dot. A dot inside a label cannot be told
// from a label boundary once the name is text: "ads.example" under "com"
// would read as ads.example.com, and be written back as three labels.
// Queries carry no compression in their question, so a pointer is
// refused too.
func plainQuestion(msg []byte) bool {
	const header = 12
	for i := header; i < len(msg); {
		n := int(msg[i])
		switch {
		case n == 0:
			return true
		case n&0xc0 != 0: // compression pointer or extended label type
			return false
		case i+1+n > len(msg):
			return false
		}
		if bytes.IndexByte(msg[i+1:i+1+n], '.') >= 0 {
			return false
		}
		i += 1 + n
	}
	return false
}

// Query is the question of a DNS query message.
type Query struct {
	ID   uint16
	Name string // as asked, lower case, no trailing dot
	Type layers.DNSType
}

// ParseQuery reads a DNS query with exactly one question.
func ParseQuery(msg []byte) (Query, error) {
	d, err := decode(msg)
	if err != nil {
		return Query{}, err
	}
	if d.QR || d.OpCode != layers.DNSOpCodeQuery || len(d.Questions) != 1 {
		return Query{}, errors.New("not a standard query with one question")
	}
	q := d.Questions[0]
	name := strings.ToLower(strings.TrimSuffix(string(q.Name), "."))
	if !validName(name) {
		return Query{}, fmt.Errorf("bad name %q in query", name)
	}
	return Query{ID: d.ID, Name: name, Type: q.Type}, nil
}

// validName accepts the root ("") and names of non-empty labels of at
// most 63 bytes, 253 in all.
func validName(name string) bool {
	if name == "" {
		return true
	}
	if len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}

// Blocked builds the answer to query for a blocked name: NXDOMAIN, or
// with zero set, 0.0.0.0 for an A query and :: for AAAA (other types get
// an empty NOERROR answer).
func Blocked(query []byte, zero bool, ttl uint32) ([]byte, error) {
	d, err := decode(query)
	if err != nil {
		return nil, err
	}
	if len(d.Questions) != 1 {
		return nil, errors.New("not a query with one question")
	}
	r := layers.DNS{ID: d.ID, QR: true, OpCode: d.OpCode, RD: d.RD, RA: true, Questions: d.Questions, ResponseCode: layers.DNSResponseCodeNXDomain}
	if zero {
		r.ResponseCode = layers.DNSResponseCodeNoErr
		q := d.Questions[0]
		switch q.Type {
		case layers.DNSTypeA:
			r.Answers = []layers.DNSResourceRecord{{Name: q.Name, Type: q.Type, Class: layers.DNSClassIN, TTL: ttl, IP: netip.IPv4Unspecified().AsSlice()}}
		case layers.DNSTypeAAAA:
			r.Answers = []layers.DNSResourceRecord{{Name: q.Name, Type: q.Type, Class: layers.DNSClassIN, TTL: ttl, IP: netip.IPv6Unspecified().AsSlice()}}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := r.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Address is one address a DNS answer gave for the name asked.
type Address struct {
	Addr netip.Addr
	TTL  uint32
}

// Answer reads a DNS response: the name asked and the A and AAAA records
// that answer it, following CNAMEs within the message.
func Answer(msg []byte) (name string, addrs []Address, err error) {
	d, err := decode(msg)
	if err != nil {
		return "", nil, err
	}
	if !d.QR || len(d.Questions) != 1 || d.ResponseCode != layers.DNSResponseCodeNoErr {
		return "", nil, nil
	}
	name = strings.ToLower(strings.TrimSuffix(string(d.Questions[0].Name), "."))
	// The names that lead to the asked one through CNAME records.
	aliases := map[string]bool{name: true}
	for range len(d.Answers) { // each pass can only add names; chains are short
		grew := false
		for _, rr := range d.Answers {
			owner := strings.ToLower(strings.TrimSuffix(string(rr.Name), "."))
			if rr.Type == layers.DNSTypeCNAME && aliases[owner] {
				target := strings.ToLower(strings.TrimSuffix(string(rr.CNAME), "."))
				if !aliases[target] {
					aliases[target], grew = true, true
				}
			}
		}
		if !grew {
			break
		}
	}
	for _, rr := range d.Answers {
		if rr.Type != layers.DNSTypeA && rr.Type != layers.DNSTypeAAAA {
			continue
		}
		if !aliases[strings.ToLower(strings.TrimSuffix(string(rr.Name), "."))] {
			continue
		}
		if a, ok := netip.AddrFromSlice(rr.IP); ok {
			addrs = append(addrs, Address{Addr: a.Unmap(), TTL: rr.TTL})
		}
	}
	return name, addrs, nil
}
