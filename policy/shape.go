package policy

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// shapes checks, before the YAML library fills the wire config, that each
// value written for a number, a yes/no, a text or a list setting has that
// shape. The library would truncate 1500.5 to 1500 without a word, and
// words its own refusals in Go's terms ("cannot unmarshal string into Go
// struct field"); here each is named by its setting. Values of other
// settings, unknown keys, and aliases are left to the library and the
// validator.
//
// YAML tags are checked and taken off on the way (see untag), so the
// library, which misreads even a fitting one (`!!int 5`), never sees them.
// shapes returns body without its tags.
func shapes(file string, body ast.Node) (ast.Node, Errors) {
	s := &shaper{file: file}
	body = s.walk(body, reflect.TypeFor[fileConfig](), "")
	return body, s.errs
}

// untagBody takes the tag, if any, off a document's body (`--- !!map`).
func untagBody(file string, body ast.Node) (ast.Node, Errors) {
	t, ok := body.(*ast.TagNode)
	if !ok {
		return body, nil
	}
	s := &shaper{file: file}
	body, _ = s.untag(t, "the file")
	return body, s.errs
}

type shaper struct {
	file string
	errs Errors
}

func (s *shaper) fail(n ast.Node, label, format string, args ...any) {
	s.errs = append(s.errs, at(s.file, n, "%s: %s", label, fmt.Sprintf(format, args...)))
}

// walk checks n against the setting of type t and returns the node to put
// in its place: n itself, or n without its tag.
func (s *shaper) walk(n ast.Node, t reflect.Type, label string) ast.Node {
	switch v := n.(type) {
	case *ast.AnchorNode:
		v.Value = s.walk(v.Value, t, label)
		return v
	case *ast.TagNode:
		if u, ok := s.untag(v, label); ok {
			return s.walk(u, t, label)
		}
		return n
	case nil, *ast.NullNode, *ast.AliasNode:
		return n // nothing written (the default stays), or left to the library
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		pairs, ok := mappingPairs(n)
		if !ok {
			want := "settings (key: value lines)"
			if t.Kind() == reflect.Map {
				want = "entries (name: value lines)"
			}
			s.fail(n, sectionName(label), "want %s, got %s", want, written(n))
			return n
		}
		for _, p := range pairs {
			if !s.untagKey(p, label) || t.Kind() == reflect.Struct && !s.nameKey(p, label) {
				continue
			}
			if _, merge := p.Key.(*ast.MergeKeyNode); merge && t.Kind() == reflect.Struct {
				p.Value = s.walk(p.Value, t, label) // `<<: {mtu: 1400}` holds settings of this section
				continue
			}
			key := keyText(p)
			if t.Kind() == reflect.Map {
				p.Value = s.walk(p.Value, t.Elem(), label+"."+key)
			} else if f, ok := fieldByTag(t, key); ok { // an unknown key is left to the library
				p.Value = s.walk(p.Value, f.Type, child(label, t, key))
			}
		}
	case reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			s.fail(n, label, "want a list like [a, b], got %s", written(n))
			return n
		}
		for i, v := range seq.Values {
			seq.Values[i] = s.walk(v, t.Elem(), item(label, t.Elem(), v, i))
		}
	case reflect.Interface:
		return s.plain(n, label) // a number or a text, read by the validator
	case reflect.Int:
		switch v := n.(type) {
		case *ast.IntegerNode:
			if u, ok := v.Value.(uint64); ok && u > math.MaxInt {
				s.fail(n, label, "%s is out of range", v.GetToken().Value)
			}
		case *ast.FloatNode:
			s.fail(n, label, "%s is not a whole number", v.GetToken().Value)
		case *ast.StringNode:
			if _, err := strconv.Atoi(v.Value); errors.Is(err, strconv.ErrRange) {
				s.fail(n, label, "%s is out of range", v.Value)
			} else if err != nil {
				s.fail(n, label, "want a whole number, got %s", written(n))
			}
		default:
			s.fail(n, label, "want a whole number, got %s", written(n))
		}
	case reflect.Bool:
		if _, ok := n.(*ast.BoolNode); !ok {
			s.fail(n, label, "want true or false, got %s", written(n))
		}
	case reflect.String:
		switch v := n.(type) {
		case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
			s.fail(n, label, "want a single value, got %s", written(n))
		case *ast.FloatNode:
			// Read as written: the library would spell 5000000.0 "5e+06".
			return ast.String(retext(v.GetToken(), v.GetToken().Value))
		}
	}
	return n
}

// plain takes the tags off a value whose shape the validator checks.
func (s *shaper) plain(n ast.Node, label string) ast.Node {
	switch v := n.(type) {
	case *ast.AnchorNode:
		v.Value = s.plain(v.Value, label)
	case *ast.TagNode:
		if u, ok := s.untag(v, label); ok {
			return s.plain(u, label)
		}
	case *ast.SequenceNode:
		for i, e := range v.Values {
			v.Values[i] = s.plain(e, fmt.Sprintf("%s[%d]", label, i))
		}
	case *ast.MappingNode, *ast.MappingValueNode:
		pairs, _ := mappingPairs(n)
		for _, p := range pairs {
			if s.untagKey(p, label) {
				p.Value = s.plain(p.Value, label+"."+keyText(p))
			}
		}
	}
	return n
}

// untag checks a tagged value and returns the value without its tag. The
// YAML core tags are taken when the value is what the tag says: !!int on a
// whole number, !!float on a number, !!bool on true or false, !!null on
// nothing, !!seq on a list, !!map on settings; !!str makes any single value
// text. A config has no use for other tags (!!binary, !!timestamp, local
// tags like !env); they are refused, as is a core tag on the wrong value.
func (s *shaper) untag(n *ast.TagNode, label string) (ast.Node, bool) {
	v := n.Value
	a, anchored := v.(*ast.AnchorNode) // `!!int &a 5`
	if anchored {
		v = a.Value
	}
	u, ok := s.check(n, v, label)
	if !ok {
		return n, false
	}
	if anchored {
		a.Value = u
		return a, true
	}
	return u, true
}

// check returns v as the tag n makes it; false after an error. A core tag
// reads the value's text as its type says, so `!!int "5"` is the number 5
// and `!!str 5` the text "5".
func (s *shaper) check(n *ast.TagNode, v ast.Node, label string) (ast.Node, bool) {
	tag := n.Start.Value
	text, scalar := scalarText(v)
	switch tag {
	case "!!str":
		switch {
		case v == nil:
			return ast.String(retext(n.Start, "")), true
		case scalar:
			return ast.String(retext(v.GetToken(), text)), true
		}
		if _, ok := v.(*ast.LiteralNode); ok {
			return v, true
		}
	case "!!int":
		if _, ok := v.(*ast.IntegerNode); ok {
			return v, true
		}
		if num := token.ToNumber(text); scalar && num != nil && num.Type != token.NumberTypeFloat {
			return ast.Integer(retext(v.GetToken(), text)), true
		}
		if _, err := strconv.ParseInt(text, 10, 64); scalar && errors.Is(err, strconv.ErrRange) {
			s.fail(n, label, "%s is out of range", text)
			return nil, false
		}
	case "!!float":
		switch v.(type) {
		case *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
			return v, true
		}
		if num := token.ToNumber(text); scalar && num != nil {
			if num.Type == token.NumberTypeFloat {
				return ast.Float(retext(v.GetToken(), text)), true
			}
			// `!!float 1500` is the number 1500.0, whole but a float, as
			// 1500.0 is: not what a setting that takes whole numbers reads.
			return &ast.FloatNode{BaseNode: &ast.BaseNode{}, Token: retext(n.Start, tag+" "+text), Value: wholeValue(num.Value)}, true
		}
	case "!!bool":
		switch text {
		case "true", "True", "TRUE", "false", "False", "FALSE":
			if scalar {
				return ast.Bool(retext(v.GetToken(), text)), true
			}
		}
	case "!!null":
		switch {
		case v == nil:
			return ast.Null(retext(n.Start, "")), true
		case scalar:
			switch text {
			case "", "~", "null", "Null", "NULL":
				return ast.Null(retext(v.GetToken(), text)), true
			}
		}
	case "!!seq":
		if _, ok := v.(*ast.SequenceNode); ok {
			return v, true
		}
	case "!!map":
		if _, ok := mappingPairs(v); ok {
			return v, true
		}
	default:
		s.fail(n, label, "the tag %s is not supported (write the value without it)", tag)
		return nil, false
	}
	what := "nothing"
	if v != nil {
		what = written(v)
	}
	s.fail(n, label, "%s does not fit its tag %s", what, tag)
	return nil, false
}

// scalarText returns the text of a single value as written, unquoted.
func scalarText(v ast.Node) (string, bool) {
	switch n := v.(type) {
	case *ast.StringNode:
		return n.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.NullNode, *ast.InfinityNode, *ast.NanNode:
		return n.GetToken().Value, true
	}
	return "", false
}

// wholeValue is the whole number x (int64 or uint64) as a float64.
func wholeValue(x any) float64 {
	switch n := x.(type) {
	case int64:
		return float64(n)
	case uint64:
		return float64(n)
	}
	return 0
}

// retext copies tk with the value text.
func retext(tk *token.Token, text string) *token.Token {
	c := *tk
	c.Value, c.Origin = text, text
	return &c
}

// nameKey reports whether the key of p can name a setting: text, or the
// merge key <<. A number, true or null as a key is an error here; the
// library would pass over the pair in silence, or lose the mapping around
// it.
func (s *shaper) nameKey(p *ast.MappingValueNode, label string) bool {
	k := keyNode(p)
	switch k.(type) {
	case *ast.StringNode, *ast.MergeKeyNode:
		return true
	}
	s.fail(k, sectionName(label), "unknown field %s (a setting's name is text)", written(k))
	return false
}

// untagKey takes a !!str tag off the key of p; it reports false, after an
// error, for a key that cannot be read as text.
func (s *shaper) untagKey(p *ast.MappingValueNode, label string) bool {
	t, ok := p.Key.(*ast.TagNode)
	if !ok {
		return true
	}
	if t.Start.Value == "!!str" {
		v, ok := s.check(t, t.Value, sectionName(label))
		if k, isKey := v.(ast.MapKeyNode); ok && isKey {
			p.Key = k
			return true
		}
		return false
	}
	s.fail(t, sectionName(label), "the key %s has the tag %s; write the key without it", t.Value, t.Start.Value)
	return false
}

// child names the setting key of the struct t, under label.
// A rule's settings are named after the rule, as the validator names them.
func child(label string, t reflect.Type, key string) string {
	if t == reflect.TypeFor[fileRule]() {
		return label + ": " + key
	}
	if label == "" {
		return key
	}
	return label + "." + key
}

// item names entry i of a list setting; a rule by its name when it has one.
func item(label string, elem reflect.Type, n ast.Node, i int) string {
	if elem != reflect.TypeFor[fileRule]() {
		return fmt.Sprintf("%s[%d]", label, i)
	}
	if pairs, ok := mappingPairs(n); ok {
		for _, p := range pairs {
			if keyText(p) == "name" {
				v := p.Value
				if t, ok := v.(*ast.TagNode); ok && t.Start.Value == "!!str" {
					v = t.Value
				}
				if v, ok := v.(*ast.StringNode); ok && v.Value != "" {
					return fmt.Sprintf("rule %q", v.Value)
				}
			}
		}
	}
	return fmt.Sprintf("rule #%d", i+1)
}

// sectionName is how a mapping is named in a message: the top of the file
// is the file itself.
func sectionName(label string) string {
	if label == "" {
		return "the file"
	}
	return label
}

// mappingPairs returns the key-value pairs of a mapping node.
func mappingPairs(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{m}, true
	}
	return nil, false
}

func keyText(p *ast.MappingValueNode) string {
	k := keyNode(p)
	if tk := k.GetToken(); tk != nil {
		return tk.Value
	}
	return k.String()
}

// keyNode is the key of p as written: the name of an explicit `? mtu` key.
func keyNode(p *ast.MappingValueNode) ast.Node {
	if m, ok := p.Key.(*ast.MappingKeyNode); ok && m.Value != nil {
		return m.Value
	}
	return p.Key
}

// fieldByTag finds the field of struct t whose yaml tag is key.
func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// written describes a value as the user wrote it.
func written(n ast.Node) string {
	switch v := n.(type) {
	case *ast.SequenceNode:
		return "a list"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "key: value settings"
	case *ast.StringNode:
		return strconv.Quote(v.Value)
	case *ast.LiteralNode:
		return "a block of text"
	}
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return n.String()
}
