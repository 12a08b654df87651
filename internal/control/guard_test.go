package control

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestGuard: on the TCP listener, only loopback names and configured hosts
// are served, cross-origin and cross-site requests are refused, and
// everything but the dashboard's files needs the bearer token.
func TestGuard(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef"
	bearer := "Bearer " + tok
	for _, tc := range []struct {
		name, method, path, host string
		headers                  map[string]string
		status                   int
		want                     string
	}{
		{"token, 127.0.0.1", "GET", "/v1/flows", "127.0.0.1:9190", map[string]string{"Authorization": bearer}, 200, `"id":7`},
		{"token, [::1]", "GET", "/v1/stats", "[::1]:9190", map[string]string{"Authorization": bearer}, 200, `flows_active`},
		{"token, localhost", "GET", "/v1/stats", "LocalHost:9190", map[string]string{"Authorization": bearer}, 200, `flows_active`},
		{"token, other loopback", "GET", "/v1/stats", "127.3.0.1:9190", map[string]string{"Authorization": bearer}, 200, `flows_active`},
		{"token, configured host", "GET", "/v1/stats", "tunwall.lan:9190", map[string]string{"Authorization": bearer}, 200, `flows_active`},
		{"no token", "GET", "/v1/flows", "127.0.0.1:9190", nil, 401, `a bearer token is required`},
		{"wrong token", "GET", "/v1/flows", "127.0.0.1:9190", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", len(tok))}, 401, `a bearer token is required`},
		{"token without scheme", "GET", "/v1/flows", "127.0.0.1:9190", map[string]string{"Authorization": tok}, 401, `bearer token`},
		{"metrics need the token", "GET", "/metrics", "127.0.0.1:9190", nil, 401, `bearer token`},
		{"metrics", "GET", "/metrics", "127.0.0.1:9190", map[string]string{"Authorization": bearer}, 200, `tunwall_flows_active{proto="tcp"} 1`},
		{"rebinding name", "GET", "/v1/flows", "evil.example:9190", map[string]string{"Authorization": bearer}, 403, `host \"evil.example:9190\" is not allowed`},
		{"LAN address", "GET", "/v1/flows", "192.168.1.5:9190", map[string]string{"Authorization": bearer}, 403, `is not allowed`},
		{"no host", "GET", "/v1/flows", "", map[string]string{"Authorization": bearer}, 403, `is not allowed`},
		{"rebinding name, page", "GET", "/", "evil.example:9190", nil, 403, `is not allowed`},
		{"foreign origin", "DELETE", "/v1/flows/7", "127.0.0.1:9190", map[string]string{"Authorization": bearer, "Origin": "http://evil.example"}, 403, `cross-origin request from \"http://evil.example\" refused`},
		{"other local port", "DELETE", "/v1/flows/7", "127.0.0.1:9190", map[string]string{"Authorization": bearer, "Origin": "http://127.0.0.1:8080"}, 403, `cross-origin`},
		{"null origin", "POST", "/v1/reload", "127.0.0.1:9190", map[string]string{"Authorization": bearer, "Origin": "null"}, 403, `cross-origin`},
		{"same origin", "DELETE", "/v1/flows/7", "127.0.0.1:9190", map[string]string{"Authorization": bearer, "Origin": "http://127.0.0.1:9190", "Sec-Fetch-Site": "same-origin"}, 200, `{"closed":7}`},
		{"cross-site fetch", "GET", "/v1/flows", "127.0.0.1:9190", map[string]string{"Authorization": bearer, "Sec-Fetch-Site": "cross-site"}, 403, `cross-site request (cross-site) refused`},
		{"same-site fetch", "GET", "/v1/flows", "127.0.0.1:9190", map[string]string{"Authorization": bearer, "Sec-Fetch-Site": "same-site"}, 403, `cross-site request (same-site) refused`},
		{"typed address", "GET", "/", "127.0.0.1:9190", map[string]string{"Sec-Fetch-Site": "none"}, 200, `<title>tunwall</title>`},
		{"page", "GET", "/", "127.0.0.1:9190", nil, 200, `<script src="app.js" defer></script>`},
		{"script", "GET", "/app.js", "127.0.0.1:9190", nil, 200, `"use strict";`},
		{"style", "GET", "/app.css", "127.0.0.1:9190", nil, 200, `:root`},
		{"unclean path", "GET", "//app.js", "127.0.0.1:9190", nil, 401, `bearer token`},
		{"page by POST", "POST", "/", "127.0.0.1:9190", nil, 405, `method not allowed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			req.Host = tc.host
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			Guard(Handler(&fake{}), tok, []string{"tunwall.lan"}).ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("%d %s, want %d with %s", rec.Code, rec.Body, tc.status, tc.want)
			}
			if rec.Code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

// TestAssets: the dashboard's files carry their types and a policy that
// keeps the page to its own origin and out of frames.
func TestAssets(t *testing.T) {
	for path, typ := range map[string]string{"/": "text/html", "/app.js": "text/javascript", "/app.css": "text/css"} {
		rec := httptest.NewRecorder()
		Handler(&fake{}).ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		h := rec.Header()
		if rec.Code != 200 || !strings.HasPrefix(h.Get("Content-Type"), typ) || h.Get("X-Frame-Options") != "DENY" ||
			!strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %v", path, rec.Code, h)
		}
	}
	if a, b := NewToken(), NewToken(); a == b || len(a) != 48 || len(b) != 48 {
		t.Error("NewToken is not a fresh 48-character token")
	}
}
