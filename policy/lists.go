package policy

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gaissmai/bart"
	"golang.org/x/net/idna"
)

// List is a compiled list file: addresses and networks in a prefix table,
// names in a domain set.
type List struct {
	Name    string
	File    string // as resolved: relative paths are taken from the config file's directory
	Addrs   int    // address and network entries
	Domains int    // name entries
	Skipped int    // bad lines skipped (lenient lists only)

	addrs *bart.Lite
	names domainSet
}

// ContainsAddr reports whether a is in one of the list's networks.
func (l *List) ContainsAddr(a netip.Addr) bool { return l.addrs.Lookup(a.Unmap()) }

// ContainsDomain reports whether name (normalised, see NormalizeDomain) is
// one of the list's names or below one of its wildcard names.
func (l *List) ContainsDomain(name string) bool { return l.names.contains(name) }

// Which entries of a domain set a name matches.
const (
	nameExact = 1 << iota // the name itself
	nameBelow             // names below it ("*.example.com")
)

// domainSet holds names and wildcard names. A lookup tries the name, then
// each parent suffix for a wildcard entry: one map probe per label.
type domainSet struct {
	m map[string]uint8
}

func (s *domainSet) add(name string, kind uint8) {
	if s.m == nil {
		s.m = make(map[string]uint8)
	}
	s.m[name] |= kind
}

func (s *domainSet) len() int { return len(s.m) }

func (s *domainSet) contains(name string) bool {
	if len(s.m) == 0 || name == "" {
		return false
	}
	if s.m[name]&nameExact != 0 {
		return true
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '.' && s.m[name[i+1:]]&nameBelow != 0 {
			return true
		}
	}
	return false
}

// NormalizeDomain returns name in the form rules and lists keep: lower
// case, ASCII (IDNA), no trailing dot. It reports false if name is not a
// valid host name.
func NormalizeDomain(name string) (string, bool) {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return "", false
	}
	plain := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		case c >= 'A' && c <= 'Z':
			plain = false
		default:
			if c >= 0x80 {
				plain = false
				continue
			}
			return "", false
		}
	}
	if !plain {
		ascii, err := idna.Lookup.ToASCII(name)
		if err != nil {
			// Lookup rejects underscores; names in blocklists carry them.
			if ascii, err = idna.Punycode.ToASCII(strings.ToLower(name)); err != nil {
				return "", false
			}
		}
		name = strings.ToLower(ascii)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
	}
	return name, true
}

// domainPattern parses a rule or list name: "example.com" (that name) or
// "*.example.com" (the names below it).
func domainPattern(s string) (name string, kind uint8, ok bool) {
	kind = nameExact
	if rest, found := strings.CutPrefix(s, "*."); found {
		s, kind = rest, nameBelow
	}
	name, ok = NormalizeDomain(s)
	return name, kind, ok
}

// hostsNames are names hosts files map to themselves; they are not
// blocklist entries.
var hostsNames = map[string]bool{
	"localhost": true, "localhost.localdomain": true, "local": true, "broadcasthost": true,
	"ip6-localhost": true, "ip6-loopback": true, "ip6-localnet": true, "ip6-mcastprefix": true,
	"ip6-allnodes": true, "ip6-allrouters": true, "ip6-allhosts": true, "0.0.0.0": true,
}

// loadList reads and compiles one list file. Each line holds an address or
// CIDR, a domain (that name and every name below it, as domain blocklists
// mean it), "*.domain" (only the names below), or a hosts-file line
// ("0.0.0.0 ads.example.com ..."; the names exactly). "#" starts a
// comment. A bad line is an error naming file and line, unless lenient:
// then it is counted in Skipped.
func loadList(name, file string, lenient bool) (*List, Errors) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, Errors{{File: file, Msg: fmt.Sprintf("list %q: %v", name, err)}}
	}
	if bytes.HasPrefix(data, []byte{0xff, 0xfe}) || bytes.HasPrefix(data, []byte{0xfe, 0xff}) {
		return nil, Errors{{File: file, Line: 1, Col: 1, Msg: fmt.Sprintf("list %q: the file is UTF-16 text; save it as UTF-8", name)}}
	}
	return parseList(name, file, string(data), lenient) // one copy; names are slices of it
}

// parseList compiles the text of a list file; see loadList.
func parseList(name, file, text string, lenient bool) (*List, Errors) {
	l := &List{Name: name, File: file, addrs: new(bart.Lite)}
	text = strings.TrimPrefix(text, string(utf8BOM))
	var errs Errors
	hidden, firstHidden, lastHidden := 0, 0, 0 // bad lines past the first 20 shown
	bad := func(line int, format string, args ...any) {
		switch {
		case lenient:
			l.Skipped++
		case len(errs) < 20:
			errs = append(errs, &Error{File: file, Line: line, Col: 1, Msg: fmt.Sprintf("list %q: %s", name, fmt.Sprintf(format, args...))})
		case line != errs[len(errs)-1].Line && line != lastHidden:
			hidden, lastHidden = hidden+1, line
			if firstHidden == 0 {
				firstHidden = line
			}
		}
	}
	for n := 1; text != ""; n++ {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		first, rest := field(line)
		if first == "" {
			continue
		}
		if rest == "" {
			if err := l.addOne(first); err != "" {
				bad(n, "%s", err)
			}
			continue
		}
		if _, err := netip.ParseAddr(first); err != nil {
			bad(n, "%q: a line of several fields must be a hosts line (address, then names)", strings.TrimSpace(line))
			continue
		}
		for rest != "" {
			var h string
			h, rest = field(rest)
			if h == "" || hostsNames[strings.ToLower(h)] {
				continue
			}
			d, ok := NormalizeDomain(h)
			if !ok {
				bad(n, "%q is not a host name", h)
				continue
			}
			l.names.add(d, nameExact)
			l.Domains++
		}
	}
	if hidden > 0 {
		more := fmt.Sprintf("%d more bad lines", hidden)
		if hidden == 1 {
			more = "1 more bad line"
		}
		errs = append(errs, &Error{File: file, Line: firstHidden, Col: 1, Msg: fmt.Sprintf("list %q: %s from here on not shown", name, more)})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return l, nil
}

// addOne adds a one-field line: an address, a CIDR or a domain pattern. It
// returns what is wrong with the line, or "".
func (l *List) addOne(s string) string {
	if strings.IndexByte(s, '/') >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Is4In6() && p.Bits() < 96 {
			return fmt.Sprintf("bad CIDR %q", s)
		}
		l.addrs.Insert(netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked())
		l.Addrs++
		return ""
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		l.addrs.Insert(netip.PrefixFrom(a, a.BitLen()))
		l.Addrs++
		return ""
	}
	if strings.IndexByte(s, ':') >= 0 || strings.Trim(s, "0123456789.") == "" {
		return fmt.Sprintf("bad address %q", s) // an address in form, not a name
	}
	name, kind, ok := domainPattern(s)
	if !ok {
		return fmt.Sprintf("%q is not an address, CIDR or domain", s)
	}
	if kind == nameExact {
		kind = nameExact | nameBelow // a plain list name covers its subdomains
	}
	l.names.add(name, kind)
	l.Domains++
	return ""
}

// unmapBits is how many prefix bits an IPv4-mapped IPv6 address has above
// its IPv4 part.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// field returns the first whitespace-separated field of s and the rest.
func field(s string) (string, string) {
	s = strings.TrimLeft(s, " \t\r")
	i := strings.IndexAny(s, " \t\r")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t\r")
}

// listPath resolves a list's file against the directory of the config file.
func listPath(configFile, file string) string {
	if filepath.IsAbs(file) || configFile == DefaultSource {
		return file
	}
	return filepath.Join(filepath.Dir(configFile), file)
}

// lists loads every list of the lists section, in name order.
func (v *validator) lists(w map[string]fileList) []*List {
	names := slices.Sorted(maps.Keys(w))
	v.section, v.details = w, make(map[*Error]*Error)
	var out []*List
	for _, name := range names {
		fl := w[name]
		path := "$.lists." + name
		if err := checkListName(name); err != nil {
			v.errorf(path, "lists: %q: %v", name, err)
			continue
		}
		if fl.File == "" {
			v.errorf(path, "lists.%s: file is required", name)
			continue
		}
		file := listPath(v.file, fl.File)
		l, errs := loadList(name, file, fl.Lenient)
		if len(errs) > 0 {
			v.errorf(path+".file", "lists.%s: %s was not loaded (see below)", name, file)
			why := v.errs[len(v.errs)-1]
			for _, e := range errs {
				v.details[e] = why
			}
			v.errs = append(v.errs, errs...)
			continue
		}
		if l.Addrs == 0 && l.Domains == 0 {
			v.errorf(path+".file", "lists.%s: %s holds no entries", name, l.File)
			continue
		}
		out = append(out, l)
	}
	return out
}

// checkListName allows names that read well in rules and logs.
func checkListName(name string) error {
	if name == "" || len(name) > 64 || strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) >= 0 {
		return fmt.Errorf("list names are 1-64 letters, digits, '-', '_' or '.'")
	}
	return nil
}

// ruleLists resolves a rule's list names; want says which kind of entry the
// reference needs ("addresses" or "domains").
func (v *validator) ruleLists(names []string, field, want string, fail func(field, format string, args ...any)) []*List {
	var out []*List
	for j, n := range names {
		l, ok := v.byName[n]
		_, listed := v.section[n]
		switch {
		case !ok && listed: // in the section but not loaded: its own errors say why
		case !ok:
			fail(fmt.Sprintf("%s[%d]", field, j), "no list %q in the lists section", n)
		case want == "addresses" && l.Addrs == 0, want == "domains" && l.Domains == 0:
			fail(fmt.Sprintf("%s[%d]", field, j), "list %q holds no %s", n, want)
		default:
			out = append(out, l)
		}
	}
	return out
}
