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

// A failed round of the reference path is left out and noted; the same
// failure on tunwall's path ends the run.
func TestAlternatingLeavesOutOptionalFailures(t *testing.T) {
	paths := []benchPath{{name: "kernel"}, {name: "tunwall", dev: "tw"}, {name: "reference", dev: "ref", optional: true}}
	var current benchPath
	route := func(p benchPath) error { current = p; return nil }
	round := map[string]int{}
	measure := func() (map[string]float64, error) {
		round[current.name]++
		if current.name == "reference" && round[current.name] == 2 {
			return nil, errControlLost
		}
		return map[string]float64{"crr": float64(10*len(current.name) + round[current.name])}, nil
	}
	var g gaps
	got, err := alternating(3, paths, &g, route, measure)
	if err != nil {
		t.Fatal(err)
	}
	if k, r := got["kernel"]["crr"], got["reference"]["crr"]; len(k) != 3 || len(r) != 2 || r[0] != 91 || r[1] != 93 {
		t.Errorf("kernel rounds %v, reference rounds %v; want 3, and 91 and 93 (round 2 left out)", k, r)
	}
	if len(g.list) != 1 || !strings.Contains(g.list[0], "reference path, round 2") || !strings.Contains(g.list[0], "control connection lost") {
		t.Errorf("gaps %q, want one naming the reference's round 2 and its error", g.list)
	}
	table := combine(medians(got["kernel"]), medians(got["tunwall"]), medians(got["reference"]))
	if f := table[3]; f.Name != "connect-request-response" || f.RefRatio == nil || *f.Reference != 92 {
		t.Errorf("connection rate figure %+v, want the reference's median of its two rounds", f)
	}

	// On tunwall's path the same failure ends the run.
	paths[1].optional, paths[2].optional = false, false
	measure2 := func() (map[string]float64, error) {
		if current.name == "tunwall" {
			return nil, errControlLost
		}
		return map[string]float64{"crr": 1}, nil
	}
	var g2 gaps
	if _, err := alternating(3, paths, &g2, route, measure2); !errors.Is(err, errControlLost) || !strings.Contains(err.Error(), "tunwall path") || len(g2.list) != 0 {
		t.Errorf("tunwall's failure: %v, gaps %q; want the run ended, naming the path", err, g2.list)
	}
}
