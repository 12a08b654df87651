package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// routing validates the routing section on its own; routingNeeds checks
// what it requires of the rest of the file.
func (v *validator) routing(w *fileRouting) RoutingConfig {
	c := RoutingConfig{Mode: w.Mode, Strict: true, KeepBlocked: w.Keep, From: w.From, Table: w.Table}
	if w.Strict != nil {
		c.Strict = *w.Strict
	}
	if !oneOf(w.Mode, "none", "all", "split") {
		v.errorf("$.routing.mode", "routing.mode %q: want none, all or split", w.Mode)
	}
	c.Include = v.prefixes("$.routing.include", "routing.include", w.Include)
	c.Exclude = v.prefixes("$.routing.exclude", "routing.exclude", w.Exclude)
	switch {
	case w.Mode == "split" && len(w.Include) == 0:
		v.errorf("$.routing.mode", "routing.mode split needs routing.include: the CIDRs to send through tunwall")
	case w.Mode != "split" && len(w.Include) > 0:
		v.errorf("$.routing.include", "routing.include only applies to routing.mode split (mode is %q)", w.Mode)
	}
	if w.Mode == "none" && len(w.From) == 0 && len(w.Exclude) > 0 {
		v.errorf("$.routing.exclude", "routing.exclude applies when tunwall routes: mode all or split, or routing.from")
	}
	seen := map[string]bool{}
	for i, name := range w.From {
		path := fmt.Sprintf("$.routing.from[%d]", i)
		if err := checkIfName(name); err != nil {
			v.errorf(path, "routing.from: %v", err)
		} else if seen[name] {
			v.errorf(path, "routing.from: %q is listed twice", name)
		}
		seen[name] = true
	}
	for i, raw := range w.UIDs {
		r, err := parseUIDRange(raw)
		if err != nil {
			v.errorf(fmt.Sprintf("$.routing.uids[%d]", i), "routing.uids: %v", err)
			continue
		}
		c.UIDs = append(c.UIDs, r)
	}
	if len(w.UIDs) > 0 && w.Mode == "none" {
		v.errorf("$.routing.uids", "routing.uids chooses whose traffic mode all or split sends through tunwall; mode none routes nothing")
	}
	if w.Table <= 0 || w.Table > math.MaxUint32 || w.Table >= 253 && w.Table <= 255 {
		v.errorf("$.routing.table", "routing.table %d: want a table id 1-4294967295 other than 253-255", w.Table)
	}
	return c
}

// routingNeeds checks what routing asks of other sections: tunwall's own
// upstream sockets must be able to bypass the TUN it routes into, and the
// TUN's names and addresses must not be routed around it.
func (v *validator) routingNeeds(cfg *Config) {
	r := cfg.Routing
	if !r.Routes() {
		return
	}
	if cfg.Egress.Mark == 0 {
		v.errorf("$.egress.mark", "egress.mark is 0, but routing sends traffic into the TUN: tunwall's own upstream sockets need a mark to bypass it")
	}
	for i, name := range r.From {
		if name == cfg.Tun.Name {
			v.errorf(fmt.Sprintf("$.routing.from[%d]", i), "routing.from: %q is tunwall's own TUN device", name)
		}
	}
}

// parseUIDRange reads 1000, "1000" or "1000-1999".
func parseUIDRange(raw any) (UIDRange, error) {
	if s, ok := raw.(string); ok && strings.Contains(s, "-") {
		lo, hi, _ := strings.Cut(s, "-")
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 32)
		b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 32)
		if err1 != nil || err2 != nil {
			return UIDRange{}, fmt.Errorf("%q is not a uid or uid range like 1000-1999", s)
		}
		if a > b {
			return UIDRange{}, fmt.Errorf("range %q is backwards", s)
		}
		return UIDRange{First: uint32(a), Last: uint32(b)}, nil
	}
	switch x := raw.(type) {
	case string:
		raw = strings.TrimSpace(x)
	case float64, bool, []any, map[string]any:
		return UIDRange{}, fmt.Errorf("want a uid or a range like 1000-1999, got %s", describe(raw))
	}
	n, err := parseUint32(raw)
	if err != nil {
		return UIDRange{}, fmt.Errorf("%v (want a uid or a range like 1000-1999)", err)
	}
	return UIDRange{First: n, Last: n}, nil
}
