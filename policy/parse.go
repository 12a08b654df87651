package policy

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

//go:embed default.yaml
var defaultYAML []byte

// utf8BOM is the byte order mark some editors write at the start of a
// UTF-8 file. Config and list files may start with one; it is skipped.
var utf8BOM = []byte("\ufeff")

// DefaultSource names the embedded default configuration in errors and logs.
const DefaultSource = "(embedded default)"

// DefaultYAML returns the text of the embedded default configuration.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Default parses the embedded default configuration.
func Default() (*Config, error) { return Parse(DefaultSource, defaultYAML) }

// Load reads and parses the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses and validates one configuration file. name is used in error
// positions. The returned error, if any, is an Errors listing every problem.
func Parse(name string, data []byte) (cfg *Config, err error) {
	// The YAML library has panicked on some malformed inputs (found by
	// FuzzParse); a bad file must be an error, never a crash.
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, Errors{{File: name, Msg: fmt.Sprintf("malformed YAML (%v)", r)}}
		}
	}()
	return parse(name, data)
}

func parse(name string, data []byte) (*Config, error) {
	f, err := parser.ParseBytes(bytes.TrimPrefix(data, utf8BOM), 0)
	if err != nil {
		return nil, Errors{yamlError(name, err)}
	}
	if len(f.Docs) > 1 {
		return nil, Errors{at(name, f.Docs[1].Body, "only one YAML document is allowed")}
	}
	wire := defaults()
	var body ast.Node
	if len(f.Docs) == 1 {
		body = f.Docs[0].Body
	}
	if body != nil {
		var errs Errors
		if body, errs = untagBody(name, body); len(errs) > 0 {
			return nil, errs
		}
		if _, ok := body.(*ast.MappingNode); !ok {
			return nil, Errors{at(name, body, "the file must be a mapping of sections (tun, routing, egress, limits, log, policy)")}
		}
		if body, errs = shapes(name, body); len(errs) > 0 {
			return nil, errs
		}
		f.Docs[0].Body = body
		if err := yaml.NodeToValue(body, &wire, yaml.DisallowUnknownField()); err != nil {
			return nil, Errors{yamlError(name, err)}
		}
	}
	v := &validator{file: name, ast: f}
	cfg := v.config(&wire)
	if len(v.errs) > 0 {
		// By position in the file; an error from a list file follows the
		// error of this file it explains, in its own order.
		anchor := func(e *Error) (*Error, int) {
			if a, ok := v.details[e]; ok {
				return a, 1
			}
			return e, 0
		}
		sort.SliceStable(v.errs, func(i, j int) bool {
			a, da := anchor(v.errs[i])
			b, db := anchor(v.errs[j])
			if a != b {
				return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
			}
			return da < db
		})
		return nil, v.errs
	}
	cfg.Source = name
	cfg.Size = len(data)
	sum := sha256.Sum256(data)
	cfg.Hash = hex.EncodeToString(sum[:8])
	return cfg, nil
}

// yamlError converts a YAML library error into a positioned Error.
func yamlError(file string, err error) *Error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{File: file, Msg: ye.GetMessage()}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Col = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	return &Error{File: file, Msg: err.Error()}
}

// at builds an Error positioned at node.
func at(file string, node ast.Node, format string, args ...any) *Error {
	e := &Error{File: file, Msg: fmt.Sprintf(format, args...)}
	// A mapping is best pointed at by its first key.
	if m, ok := node.(*ast.MappingNode); ok && len(m.Values) > 0 {
		node = m.Values[0].Key
	}
	if node != nil {
		if tk := node.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Col = tk.Position.Line, tk.Position.Column
		}
	}
	return e
}
