package names

import (
	"bytes"
	"net"
	"strings"
)

// HTTPHost returns the host of the Host header of the HTTP/1 request that
// b starts with, without a port. It returns ErrMore while the header block
// is incomplete, and another error if b is not an HTTP request or has no
// Host header.
func HTTPHost(b []byte) (string, error) {
	// The request line: a method of upper-case letters, then a space.
	sp := bytes.IndexByte(b, ' ')
	if sp < 0 {
		if len(b) < 16 && isToken(b) {
			return "", ErrMore
		}
		return "", errNot
	}
	if sp == 0 || !isToken(b[:sp]) {
		return "", errNot
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	block := b
	if end >= 0 {
		block = b[:end+2]
	}
	lines := bytes.Split(block, []byte("\r\n"))
	if end < 0 {
		lines = lines[:len(lines)-1] // the last line may be cut short
		if len(lines) == 0 {
			return "", ErrMore // the request line itself is not complete
		}
	}
	for _, line := range lines[1:] {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !strings.EqualFold(string(k), "host") {
			continue
		}
		host := strings.TrimSpace(string(v))
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if host == "" {
			return "", errNot
		}
		return host, nil
	}
	if end < 0 {
		return "", ErrMore
	}
	return "", errNot
}

func isToken(b []byte) bool {
	for _, c := range b {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}
