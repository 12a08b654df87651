package main

import (
	"fmt"
	"io"

	"github.com/tunwall/tunwall/tun"
)

// cmdDown removes every rule, route and setting tunwall installed in this
// network namespace (or, with -c, those of that file's routing table),
// including the strict backstop and what a crashed run left behind.
func cmdDown(args []string, stdout io.Writer) error {
	path, rest, err := flags("down", args, false)
	if err != nil {
		return err
	}
	if err := noArgs("down", rest); err != nil {
		return err
	}
	sweepStatus() // status files of killed tunwalls
	table := 0
	if path != "" {
		cfg, err := loadConfig(path)
		if err != nil {
			return err
		}
		table = cfg.Routing.Table
	}
	removed, err := tun.Down(table)
	for _, item := range removed {
		fmt.Fprintln(stdout, "removed", item)
	}
	if err == nil && len(removed) == 0 {
		fmt.Fprintln(stdout, "nothing to remove")
	}
	return err
}
