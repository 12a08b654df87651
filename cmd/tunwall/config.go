package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/tunwall/tunwall/policy"
)

// flags parses a subcommand's -c flag; required says whether it must be
// set. more are the subcommand's own flags. Flags may come before, between
// or after the other arguments (`explain tcp A B --at 09:00`); after `--`
// everything is an argument. -h or --help asks for the command's usage.
func flags(name string, args []string, required bool, more ...flagDef) (path string, rest []string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&path, "c", "", "configuration file")
	for _, f := range more {
		f.define(fs)
	}
	var tail []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, tail = args[:i], args[i+1:]
	}
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			return "", nil, helpRequest{name}
		} else if err != nil {
			return "", nil, usageError{fmt.Errorf("%s: %w", name, err)}
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	rest = append(rest, tail...)
	if required && path == "" {
		if len(rest) > 0 {
			return "", nil, usageError{fmt.Errorf("%s: -c FILE is required (tunwall %s -c %s)", name, name, rest[0])}
		}
		return "", nil, usageError{fmt.Errorf("%s: -c FILE is required", name)}
	}
	return path, rest, nil
}

// helpRequest is a command's -h or --help: its usage goes to stdout and
// the exit status is 0.
type helpRequest struct{ command string }

func (h helpRequest) Error() string { return h.command + ": help requested" }

// flagDef is a subcommand's own flag.
type flagDef interface{ define(*flag.FlagSet) }

// boolFlag is an on/off flag (--name).
type boolFlag struct {
	name string
	p    *bool
}

func (b boolFlag) define(fs *flag.FlagSet) { fs.BoolVar(b.p, b.name, false, "") }

// stringFlag is a flag with a value (--name VALUE).
type stringFlag struct {
	name string
	p    *string
}

func (f stringFlag) define(fs *flag.FlagSet) { fs.StringVar(f.p, f.name, "", "") }

// loadConfig reads path, or the embedded default when path is empty.
// Configuration errors are usage errors (exit 2).
func loadConfig(path string) (*policy.Config, error) {
	var cfg *policy.Config
	var err error
	if path == "" {
		cfg, err = policy.Default()
	} else {
		cfg, err = policy.Load(path)
	}
	if err != nil {
		if _, ok := policy.AsErrors(err); ok {
			return nil, usageError{fmt.Errorf("invalid configuration:\n%w", err)}
		}
		return nil, usageError{err}
	}
	return cfg, nil
}

// configOnly parses a subcommand that takes -c and no other arguments and
// loads its configuration.
func configOnly(name string, args []string, required bool, more ...flagDef) (*policy.Config, error) {
	path, rest, err := flags(name, args, required, more...)
	if err != nil {
		return nil, err
	}
	if err := noArgs(name, rest); err != nil {
		return nil, err
	}
	return loadConfig(path)
}

func cmdCheck(args []string, stdout io.Writer) error {
	cfg, err := configOnly("check", args, true)
	if err != nil {
		return err
	}
	path := cfg.Source
	fmt.Fprintf(stdout, "%s: ok (%s, default %s, tun %s, routing %s)\n",
		path, count(cfg.Policy.Len(), "rule"), cfg.Policy.Default(), cfg.Tun.Name, cfg.Routing.Mode)
	if cfg.ZeroBytes() != nil {
		fmt.Fprintln(stdout, "note: the file has 0 bytes: a start takes it for all defaults, a reload refuses it (add a comment line)")
	}
	for _, l := range cfg.Lists {
		fmt.Fprintf(stdout, "list %s: %s: %d addresses, %d domains", l.Name, l.File, l.Addrs, l.Domains)
		if l.Skipped > 0 {
			fmt.Fprintf(stdout, ", %d bad lines skipped (lenient)", l.Skipped)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}
