package policy

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// shapes checks, before the YAML library fills the wire config, that each
// value written for a number, a yes/no, a text or a list setting has that
// shape. The library would truncate 1500.5 to 1500 without a word, and
// words its own refusals in Go's terms ("cannot unmarshal string into Go
// struct field"); here each is named by its setting. Values of other
// settings, unknown keys, and aliases are left to the library and the
// validator.
func shapes(file string, body ast.Node) Errors {
	s := &shaper{file: file}
	s.walk(body, reflect.TypeFor[fileConfig](), "")
	return s.errs
}

type shaper struct {
	file string
	errs Errors
}

func (s *shaper) fail(n ast.Node, label, format string, args ...any) {
	s.errs = append(s.errs, at(s.file, n, "%s: %s", label, fmt.Sprintf(format, args...)))
}

func (s *shaper) walk(n ast.Node, t reflect.Type, label string) {
	if a, ok := n.(*ast.AnchorNode); ok {
		n = a.Value
	}
	switch n.(type) {
	case nil, *ast.NullNode, *ast.AliasNode, *ast.TagNode:
		return // nothing written (the default stays), or left to the library
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
			return
		}
		for _, p := range pairs {
			key := keyText(p)
			if t.Kind() == reflect.Map {
				s.walk(p.Value, t.Elem(), label+"."+key)
			} else if f, ok := fieldByTag(t, key); ok { // an unknown key is left to the library
				s.walk(p.Value, f.Type, child(label, t, key))
			}
		}
	case reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			s.fail(n, label, "want a list like [a, b], got %s", written(n))
			return
		}
		for i, v := range seq.Values {
			s.walk(v, t.Elem(), item(label, t.Elem(), v, i))
		}
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
		switch n.(type) {
		case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
			s.fail(n, label, "want a single value, got %s", written(n))
		}
	}
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
				if v, ok := p.Value.(*ast.StringNode); ok && v.Value != "" {
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
	if tk := p.Key.GetToken(); tk != nil {
		return tk.Value
	}
	return p.Key.String()
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
