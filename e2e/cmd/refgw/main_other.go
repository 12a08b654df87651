//go:build !linux

// Command refgw is the benchmark's reference gateway; it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "refgw: Linux only")
	os.Exit(1)
}
