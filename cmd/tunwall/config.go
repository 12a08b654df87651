package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/tunwall/tunwall/policy"
)

// flags parses a subcommand's -c flag; required says whether it must be set.
func flags(name string, args []string, required bool) (path string, rest []string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&path, "c", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return "", nil, usageError{fmt.Errorf("%s: %w", name, err)}
	}
	if required && path == "" {
		return "", nil, usageError{fmt.Errorf("%s: -c FILE is required", name)}
	}
	return path, fs.Args(), nil
}

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

func cmdCheck(args []string, stdout io.Writer) error {
	path, rest, err := flags("check", args, true)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Errorf("check: unexpected arguments %q", rest)}
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d rules, default %s, tun %s, routing %s)\n",
		path, cfg.Policy.Len(), cfg.Policy.Default(), cfg.Tun.Name, cfg.Routing.Mode)
	return nil
}
