package main

import (
	"errors"
	"strings"
	"testing"
)

func TestParseIperf(t *testing.T) {
	ok := `{"start": {}, "end": {"sum_received": {"bytes": 2500000000, "bits_per_second": 5e9}}}`
	bps, bytes, err := parseIperf([]byte(ok), []string{"-R"})
	if err != nil || bps != 5e9 || bytes != 2.5e9 {
		t.Errorf("a good report: %v %v %v", bps, bytes, err)
	}
	for _, c := range []struct {
		name, out, want string
		is              error // the error it must be, if any
	}{
		{"nothing received", `{"end": {"sum_received": {"bytes": 0, "bits_per_second": 0}}}`, "nothing received", errNothingReceived},
		{"no summary", `{"start": {}, "end": {}}`, "nothing received", errNothingReceived},
		{"server busy", `{"error": "the server is busy running a test. try again later"}`, "server is busy", errServerBusy},
		{"control connection lost", `{"error": "unable to receive control message: Connection reset by peer"}`, "Connection reset", errControlLost},
		{"iperf3's own error", `{"error": "unable to connect to server: Connection refused"}`, "Connection refused", nil},
		{"not JSON", `iperf3: error - unable to connect`, "invalid character", nil},
	} {
		_, _, err := parseIperf([]byte(c.out), []string{"-P", "4"})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "[-P 4]") {
			t.Errorf("%s: %v, want an error naming the run and saying %q", c.name, err, c.want)
		}
		for _, e := range []error{errNothingReceived, errServerBusy, errControlLost} {
			if want := e == c.is; errors.Is(err, e) != want {
				t.Errorf("%s: errors.Is(%v) = %v, want %v", c.name, e, !want, want)
			}
		}
	}
}
