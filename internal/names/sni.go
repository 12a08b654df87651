package names

import "errors"

// ErrMore says the bytes so far end before the answer: read more.
var ErrMore = errors.New("need more bytes")

// errNot says the bytes are not what the parser reads.
var errNot = errors.New("not this protocol")

// ServerName returns the server_name of the TLS ClientHello that b starts
// with ("" if it has none). It returns ErrMore while b is a prefix of a
// ClientHello, and another error if b is not one.
func ServerName(b []byte) (string, error) {
	hs, err := handshake(b)
	if err != nil {
		return "", err
	}
	// Handshake header: type 1 (ClientHello), 24-bit length.
	if len(hs) < 4 {
		return "", ErrMore
	}
	if hs[0] != 1 {
		return "", errNot
	}
	n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	if len(hs) < 4+n {
		return "", ErrMore
	}
	c := cursor{b: hs[4 : 4+n]}
	c.skip(2 + 32)       // version, random
	c.skip(int(c.u8()))  // session id
	c.skip(int(c.u16())) // cipher suites
	c.skip(int(c.u8()))  // compression methods
	if c.bad {
		return "", errNot
	}
	if len(c.b) == 0 {
		return "", nil // no extensions
	}
	exts := cursor{b: c.bytes(int(c.u16()))}
	for !c.bad && !exts.bad && len(exts.b) > 0 {
		typ := exts.u16()
		body := cursor{b: exts.bytes(int(exts.u16()))}
		if typ != 0 { // server_name
			continue
		}
		list := cursor{b: body.bytes(int(body.u16()))}
		for !list.bad && len(list.b) > 0 {
			kind := list.u8()
			name := list.bytes(int(list.u16()))
			if !list.bad && kind == 0 { // host_name
				return string(name), nil
			}
		}
		return "", errNot
	}
	if c.bad || exts.bad {
		return "", errNot
	}
	return "", nil
}

// handshake joins the handshake-record payloads at the start of b.
func handshake(b []byte) ([]byte, error) {
	var hs []byte
	for len(b) > 0 {
		if len(b) < 5 {
			if b[0] != 22 || len(b) > 1 && b[1] != 3 {
				if hs == nil {
					return nil, errNot
				}
				return hs, nil
			}
			return hs, ErrMore
		}
		if b[0] != 22 || b[1] != 3 { // handshake record, TLS 1.x (or SSL 3)
			if hs == nil {
				return nil, errNot
			}
			return hs, nil
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > 1<<14+2048 {
			return nil, errNot
		}
		if len(b) < 5+n {
			return append(hs, b[5:]...), nil // the caller finds out if that is enough
		}
		hs = append(hs, b[5:5+n]...)
		b = b[5+n:]
	}
	return hs, nil
}

// cursor reads big-endian fields; reading past the end sets bad, and
// every later read returns zeros.
type cursor struct {
	b   []byte
	bad bool
}

func (c *cursor) bytes(n int) []byte {
	if c.bad || n < 0 || n > len(c.b) {
		c.bad, c.b = true, nil
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) skip(n int) { c.bytes(n) }

func (c *cursor) u8() uint8 {
	if v := c.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (c *cursor) u16() uint16 {
	if v := c.bytes(2); v != nil {
		return uint16(v[0])<<8 | uint16(v[1])
	}
	return 0
}
