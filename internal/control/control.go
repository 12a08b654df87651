// Package control is tunwall's control API: JSON over HTTP on a unix
// socket, to list and close live flows, see recent refusals, counters and
// the policy, and reload it.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/policy"
)

// Backend is what the API shows and acts on; the running gateway
// implements it.
type Backend interface {
	Flows() []netstack.FlowInfo
	CloseFlow(id uint64) bool
	Denied() []netstack.DeniedInfo
	Stats() map[string]uint64
	// Reload loads the configuration again; a *policy.Errors-carrying
	// error means the file is bad and the running policy stays.
	Reload() error
	Policy() PolicyInfo
	Metrics() netstack.Metrics
	// Dashboard is the dashboard's address with its token, "" without a
	// TCP listener.
	Dashboard() string
	// Capture starts capturing the packets of flow id, or the refused
	// packets when id is 0, cut to snaplen bytes.
	Capture(id uint64, snaplen int) (PacketSource, error)
	CaptureConfig() policy.CaptureConfig
}

// Flow is a live flow in API answers.
type Flow struct {
	ID           uint64 `json:"id"`
	Proto        string `json:"proto"`
	Src          string `json:"src"`
	Dst          string `json:"dst"`
	Domain       string `json:"domain,omitempty"`
	DomainSource string `json:"domain_source,omitempty"`
	UID          *int64 `json:"uid,omitempty"`
	User         string `json:"user,omitempty"`
	PID          int    `json:"pid,omitempty"`
	Exe          string `json:"exe,omitempty"`
	Rule         string `json:"rule"`
	Action       string `json:"action"`
	Enforced     bool   `json:"enforced"`
	BytesOut     int64  `json:"bytes_out"`
	BytesIn      int64  `json:"bytes_in"`
	Start        string `json:"start"`
	IdleMS       int64  `json:"idle_ms"`
}

// Denied is a recent refusal in API answers.
type Denied struct {
	Proto  string `json:"proto"`
	Src    string `json:"src"`
	Dst    string `json:"dst"`
	Domain string `json:"domain,omitempty"`
	Rule   string `json:"rule"`
	Action string `json:"action"`
	Limit  string `json:"limit,omitempty"` // a limit refused a flow the policy allowed (by rule)
	Count  uint64 `json:"count"`
	First  string `json:"first"`
	Last   string `json:"last"`
}

// PolicyInfo describes the policy in force.
type PolicyInfo struct {
	Hash          string `json:"hash"`
	Source        string `json:"source"`
	Mode          string `json:"mode"`
	Default       string `json:"default"`
	DefaultHits   uint64 `json:"default_hits"`
	Rules         []Rule `json:"rules"`
	LoadedAt      string `json:"loaded_at"`
	ReloadsFailed int    `json:"reloads_failed"`
}

// Rule is one rule of the policy with its hit count.
type Rule struct {
	Name   string `json:"name"`
	Action string `json:"action"`
	Line   int    `json:"line"`
	Hits   uint64 `json:"hits"`
}

// FlowOf converts a flow-table entry for the API.
func FlowOf(f netstack.FlowInfo) Flow {
	out := Flow{
		ID: f.ID, Proto: f.Flow.Proto.String(), Src: f.Flow.Src.String(), Dst: f.Flow.Dst.String(),
		Domain: f.Flow.Domain, DomainSource: f.Flow.DomainSource, Rule: f.Rule, Action: f.Action.String(),
		Enforced: f.Enforced, BytesOut: f.BytesOut, BytesIn: f.BytesIn,
		Start: f.Start.UTC().Format(time.RFC3339Nano), IdleMS: f.Idle.Milliseconds(),
	}
	if f.Flow.Proto == policy.ICMP {
		out.Src, out.Dst = f.Flow.Src.Addr().String(), f.Flow.Dst.Addr().String()
	}
	if o := f.Flow.Owner; o != nil {
		uid := int64(o.UID)
		out.UID, out.User, out.PID, out.Exe = &uid, o.User, o.PID, o.Exe
	}
	return out
}

// DeniedOf converts a recent refusal for the API.
func DeniedOf(d netstack.DeniedInfo) Denied {
	dst := d.Dst.String()
	if d.Proto == policy.ICMP {
		dst = d.Dst.Addr().String()
	}
	return Denied{
		Proto: d.Proto.String(), Src: d.Src.String(), Dst: dst, Domain: d.Domain, Rule: d.Rule,
		Action: d.Action.String(), Limit: d.Limit, Count: d.Count,
		First: d.First.UTC().Format(time.RFC3339Nano), Last: d.Last.UTC().Format(time.RFC3339Nano),
	}
}

// Handler serves the API for b.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	// Each endpoint takes one method; others get a JSON 405. An API
	// endpoint (params non-nil) takes the query parameters params names,
	// each once, and refuses others rather than ignoring them: a filter
	// it does not have, or a misspelt one, would go unnoticed otherwise.
	route := func(method, path string, params []string, h http.HandlerFunc) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != method {
				w.Header().Set("Allow", method)
				fail(w, http.StatusMethodNotAllowed, "%s %s: method not allowed (use %s)", r.Method, r.URL.Path, method)
				return
			}
			if params != nil {
				if err := checkQuery(r.URL.RawQuery, params); err != nil {
					fail(w, http.StatusBadRequest, "%s %s: %v", r.Method, r.URL.Path, err)
					return
				}
			}
			h(w, r)
		})
	}
	none := []string{}
	route(http.MethodGet, "/v1/flows", none, func(w http.ResponseWriter, r *http.Request) {
		flows := b.Flows()
		out := make([]Flow, 0, len(flows))
		for _, f := range flows {
			out = append(out, FlowOf(f))
		}
		reply(w, http.StatusOK, out)
	})
	route(http.MethodDelete, "/v1/flows/{id}", none, func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		if err != nil {
			fail(w, http.StatusBadRequest, "flow id %q is not a number", r.PathValue("id"))
			return
		}
		if !b.CloseFlow(id) {
			fail(w, http.StatusNotFound, "no live flow %d", id)
			return
		}
		reply(w, http.StatusOK, map[string]any{"closed": id})
	})
	route(http.MethodGet, "/v1/denied", none, func(w http.ResponseWriter, r *http.Request) {
		denied := b.Denied()
		out := make([]Denied, 0, len(denied))
		for _, d := range denied {
			out = append(out, DeniedOf(d))
		}
		reply(w, http.StatusOK, out)
	})
	route(http.MethodGet, "/v1/stats", none, func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, b.Stats())
	})
	route(http.MethodGet, "/v1/policy", none, func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, b.Policy())
	})
	route(http.MethodPost, "/v1/reload", none, func(w http.ResponseWriter, r *http.Request) {
		err := b.Reload()
		if _, bad := policy.AsErrors(err); bad {
			fail(w, http.StatusUnprocessableEntity, "%v", err)
			return
		}
		if err != nil {
			fail(w, http.StatusInternalServerError, "%v", err)
			return
		}
		reply(w, http.StatusOK, b.Policy())
	})
	route(http.MethodGet, "/v1/dashboard", none, func(w http.ResponseWriter, r *http.Request) {
		url := b.Dashboard()
		if url == "" {
			fail(w, http.StatusNotFound, "no dashboard: the API has no TCP listener (set control.listen)")
			return
		}
		reply(w, http.StatusOK, map[string]string{"url": url})
	})
	route(http.MethodGet, "/v1/capture", captureParams, func(w http.ResponseWriter, r *http.Request) { capture(b, w, r) })
	metrics := metricsHandler(b)
	// A scraper's own parameters and a browser's are no concern of these.
	route(http.MethodGet, "/metrics", nil, metrics.ServeHTTP)
	for p := range assets {
		if p == "/" {
			p = "/{$}" // the page itself; other paths are not the page
		}
		route(http.MethodGet, p, nil, serveAsset)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, "%s: no such endpoint", r.URL.Path)
	})
	return recoverer(mux)
}

// checkQuery reports what is wrong with a request's query: one that does
// not parse, a parameter not among params, or one given twice.
func checkQuery(raw string, params []string) error {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return fmt.Errorf("bad query %q: %v", raw, err)
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		v := q[k]
		if !slices.Contains(params, k) {
			if len(params) == 0 {
				return fmt.Errorf("unknown parameter %q (this endpoint takes none)", k)
			}
			return fmt.Errorf("unknown parameter %q (this endpoint takes %s)", k, strings.Join(params, ", "))
		}
		if len(v) > 1 {
			return fmt.Errorf("parameter %q given %d times", k, len(v))
		}
	}
	return nil
}

// recoverer turns a handler panic into a 500 answer.
func recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				fail(w, http.StatusInternalServerError, "internal error: %v", v)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	reply(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// ErrNoServer says no tunwall answers on the socket.
var ErrNoServer = errors.New("no tunwall answers on the control socket")
