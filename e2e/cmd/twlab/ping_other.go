//go:build !linux

package main

import (
	"errors"
	"time"
)

func echoICMP(string, time.Duration) error {
	return errors.New("twlab probe icmp: Linux only")
}
