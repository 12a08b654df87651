package control

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Guard protects the API on a TCP listener, where anything on the machine,
// browsers included, can connect:
//
//   - the Host header must name localhost, a loopback address, or one of
//     hosts: a page on another name that resolves to 127.0.0.1 (DNS
//     rebinding) is refused;
//   - a request a browser marks as coming from another origin (Origin
//     header, Sec-Fetch-Site) is refused, so no other page can act on
//     the API, even with the token in hand;
//   - every API request needs "Authorization: Bearer TOKEN". Only the
//     dashboard's own files, which hold no data, are served without it;
//     the page asks for the token and sends it with each request.
func Guard(h http.Handler, token string, hosts []string) http.Handler {
	allowed := map[string]bool{"localhost": true}
	for _, n := range hosts {
		allowed[strings.ToLower(n)] = true
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := hostName(r.Host)
		if a, err := netip.ParseAddr(host); !(allowed[host] || err == nil && a.Unmap().IsLoopback()) {
			fail(w, http.StatusForbidden, "host %q is not allowed: use localhost or the listen address, or add the name to control.hosts", r.Host)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(o, "http://"+r.Host) {
			fail(w, http.StatusForbidden, "cross-origin request from %q refused", o)
			return
		}
		if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
			fail(w, http.StatusForbidden, "cross-site request (%s) refused", s)
			return
		}
		if !isAsset(r.URL.Path) && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tunwall"`)
			fail(w, http.StatusUnauthorized, "a bearer token is required (tunwall dashboard prints a link with it)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostName is the lower-case host of a Host header, without port or
// brackets.
func hostName(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.ToLower(strings.Trim(host, "[]"))
}

// NewToken returns a random bearer token.
func NewToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}
