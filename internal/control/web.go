package control

import (
	"embed"
	"net/http"
)

// web holds the dashboard: one page, its script and its style sheet, all
// served from the binary (no CDN, works offline).
//
//go:embed web
var web embed.FS

// assets maps the dashboard's URL paths to their files.
var assets = map[string]struct{ file, typ string }{
	"/":        {"web/index.html", "text/html; charset=utf-8"},
	"/app.js":  {"web/app.js", "text/javascript; charset=utf-8"},
	"/app.css": {"web/app.css", "text/css; charset=utf-8"},
}

// isAsset reports whether path is one of the dashboard's files, which hold
// no data and need no token.
func isAsset(p string) bool { _, ok := assets[p]; return ok }

// serveAsset answers with one dashboard file. The page may only load its
// own files and talk to its own origin, and may not be framed.
func serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := assets[r.URL.Path]
	if !ok {
		fail(w, http.StatusNotFound, "%s: no such endpoint", r.URL.Path)
		return
	}
	b, err := web.ReadFile(a.file)
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.typ)
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.Write(b)
}
