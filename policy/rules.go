package policy

import (
	"errors"
	"fmt"
	"math"
	"os/user"
	"path"
	"strconv"
	"strings"
)

// policy validates the policy section and compiles it.
func (v *validator) policy(w *filePolicy) *Policy {
	p := &Policy{}
	def, err := ParseAction(w.Default)
	if err != nil {
		v.errorf("$.policy.default", "policy.default: %v", err)
	}
	p.def = def
	p.monitor = v.either("$.policy.mode", w.Mode, "enforce", "monitor")
	p.reevaluate = v.either("$.policy.on_reload", w.OnReload, "keep", "reevaluate")
	seen := map[string]int{}
	for i := range w.Rules {
		r, ok := v.rule(i, &w.Rules[i], seen)
		if ok {
			p.rules = append(p.rules, r)
			p.needsOwner = p.needsOwner || r.asksOwner()
			p.needsDomain = p.needsDomain || r.byName()
			if r.aboutNameOnly() {
				p.nameRules = append(p.nameRules, len(p.rules)-1)
			}
		}
	}
	p.ix = buildIndex(p.rules)
	return p
}

// rule validates one rule. Messages name the rule so a reader of a long file
// knows which one is meant.
func (v *validator) rule(i int, w *fileRule, seen map[string]int) (rule, bool) {
	base := fmt.Sprintf("$.policy.rules[%d]", i)
	who := fmt.Sprintf("rule #%d", i+1)
	if w.Name != "" {
		who = fmt.Sprintf("rule %q", w.Name)
	}
	n := len(v.errs)
	fail := func(field, format string, args ...any) {
		path := base
		if field != "" {
			path += "." + field
		}
		v.errorf(path, "%s: %s", who, fmt.Sprintf(format, args...))
	}
	r := rule{name: w.Name, index: i, log: w.Log}
	if n := v.node(base); n != nil && n.GetToken() != nil && n.GetToken().Position != nil {
		r.line = n.GetToken().Position.Line
	}
	switch {
	case w.Name == "":
		fail("", "name is required")
	case seen[w.Name] > 0:
		fail("name", "duplicate name (first used by rule #%d)", seen[w.Name])
	default:
		seen[w.Name] = i + 1
	}
	act, err := ParseAction(w.Action)
	if err != nil {
		fail("action", "%v", err)
	}
	r.action = act
	r.protos = v.protos(w.Proto, fail)
	r.src = newPrefixSet(v.prefixes(base+".src", who+": src", w.Src))
	r.dst = newPrefixSet(v.prefixes(base+".dst", who+": dst", w.Dst))
	if len(w.Ports) > 0 && r.protos&ICMP != 0 {
		fail("ports", "ports need proto tcp, udp or [tcp, udp] (ICMP has no ports)")
	}
	for j, pv := range w.Ports {
		pr, err := parsePortRange(pv)
		if err != nil {
			fail(fmt.Sprintf("ports[%d]", j), "%v", err)
			continue
		}
		r.ports = append(r.ports, pr)
	}
	r.srcLists = v.ruleLists(w.SrcList, "src_list", "addresses", fail)
	r.dstLists = v.ruleLists(w.DstList, "dst_list", "addresses", fail)
	r.domainLists = v.ruleLists(w.DomainList, "domain_list", "domains", fail)
	for j, d := range w.Domains {
		name, kind, ok := domainPattern(d)
		if !ok {
			fail(fmt.Sprintf("domains[%d]", j), "%q is not a domain (example.com, or *.example.com for the names below it)", d)
			continue
		}
		r.domains.add(name, kind)
	}
	if w.When != nil {
		r.when = parseWhen(w.When, fail)
	}
	if w.Domains != nil && len(w.Domains) == 0 {
		fail("domains", "empty list (omit domains to match any name)")
	}
	if w.Users != nil && len(w.Users) == 0 {
		fail("users", "empty list (omit users to match any user)")
	}
	for j, u := range w.Users {
		ur, err := parseUser(u)
		if err != nil {
			fail(fmt.Sprintf("users[%d]", j), "%v", err)
			continue
		}
		r.users = append(r.users, ur)
	}
	if w.Apps != nil && len(w.Apps) == 0 {
		fail("apps", "empty list (omit apps to match any app)")
	}
	for j, g := range w.Apps {
		if err := checkAppGlob(g); err != nil {
			fail(fmt.Sprintf("apps[%d]", j), "%v", err)
			continue
		}
		r.apps = append(r.apps, g)
	}
	return r, len(v.errs) == n
}

// parseUser reads a users entry: a uid, a range "1000-1999", or a user name
// that must exist on this machine (it is resolved once, at load).
func parseUser(raw any) (UIDRange, error) {
	s, isString := raw.(string)
	if !isString || strings.TrimSpace(s) == "" || strings.IndexFunc(strings.TrimSpace(s), notUIDChar) < 0 {
		return parseUIDRange(raw)
	}
	uid, err := UserID(s)
	if errors.Is(err, errNoSuchUser) {
		return UIDRange{}, fmt.Errorf("%w (use a uid to name one that does not exist yet)", err)
	}
	if err != nil {
		return UIDRange{}, err
	}
	return UIDRange{First: uid, Last: uid}, nil
}

var errNoSuchUser = errors.New("no such user on this machine")

// UserID returns the uid of the user called name on this machine.
func UserID(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("user %q: %w", name, errNoSuchUser)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has uid %q, which is not a number", name, u.Uid)
	}
	return uint32(uid), nil
}

func notUIDChar(r rune) bool { return (r < '0' || r > '9') && r != '-' && r != ' ' }

// checkAppGlob accepts an executable path or file name glob.
func checkAppGlob(g string) error {
	switch {
	case g == "":
		return fmt.Errorf("empty app (want a path like /usr/bin/curl, a name like curl, or a glob)")
	case strings.Contains(g, "/") && !strings.HasPrefix(g, "/") && !strings.HasPrefix(g, "*"):
		return fmt.Errorf("app %q: a path must be absolute (executables are matched by their full path)", g)
	}
	if _, err := path.Match(g, ""); err != nil {
		return fmt.Errorf("app %q: bad glob: %v", g, err)
	}
	return nil
}

func (v *validator) protos(raw any, fail func(field, format string, args ...any)) Proto {
	var names []any
	switch x := raw.(type) {
	case nil:
		return anyProto
	case string:
		names = []any{x}
	case []any:
		names = x
	default:
		fail("proto", "want tcp, udp, icmp or a list of them")
		return anyProto
	}
	if len(names) == 0 {
		fail("proto", "empty list (omit proto to match any protocol)")
		return anyProto
	}
	var ps Proto
	for j, n := range names {
		s, ok := n.(string)
		if !ok {
			fail(fmt.Sprintf("proto[%d]", j), "proto: want tcp, udp or icmp, got %s", describe(n))
			continue
		}
		p, err := ParseProto(s)
		if err != nil {
			fail(fmt.Sprintf("proto[%d]", j), "%v", err)
			continue
		}
		ps |= p
	}
	return ps
}

// portRange is an inclusive range of destination ports.
type portRange struct{ lo, hi uint16 }

func parsePortRange(raw any) (portRange, error) {
	var s string
	switch x := raw.(type) {
	case uint64:
		s = strconv.FormatUint(x, 10)
	case int64:
		s = strconv.FormatInt(x, 10)
	case int:
		s = strconv.Itoa(x)
	case string:
		s = strings.TrimSpace(x)
	default:
		return portRange{}, fmt.Errorf("port: want a number 1-65535 or a range like \"2200-2299\", got %s", describe(raw))
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		a, err := parsePort(lo)
		return portRange{a, a}, err
	}
	a, err1 := parsePort(lo)
	b, err2 := parsePort(hi)
	if err1 != nil || err2 != nil {
		return portRange{}, fmt.Errorf("port range %q: want two ports 1-65535, like \"2200-2299\"", s)
	}
	if b < a {
		return portRange{}, fmt.Errorf("port range %q is backwards", s)
	}
	return portRange{a, b}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want 1-65535", s)
	}
	return uint16(n), nil
}

func parseUint32(raw any) (uint32, error) {
	var n uint64
	var err error
	switch x := raw.(type) {
	case uint64:
		n = x
	case int64:
		if x < 0 {
			return 0, fmt.Errorf("%d is negative", x)
		}
		n = uint64(x)
	case int:
		if x < 0 {
			return 0, fmt.Errorf("%d is negative", x)
		}
		n = uint64(x)
	case string:
		n, err = strconv.ParseUint(x, 0, 32)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number", x)
		}
	case nil:
		return 0, nil
	default:
		return 0, fmt.Errorf("want a whole number, got %s", describe(raw))
	}
	if n > math.MaxUint32 {
		return 0, fmt.Errorf("%d does not fit in 32 bits", n)
	}
	return uint32(n), nil
}

// describe names a value decoded into an any-typed setting the way it
// was written, not in Go's terms.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case map[string]any:
		return "key: value settings"
	case []any:
		return "a list"
	case nil:
		return "nothing"
	case float64:
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eEnN") {
			s += ".0" // 80.0, not to be read as the whole number 80
		}
		return s
	}
	return fmt.Sprint(v)
}
