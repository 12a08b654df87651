package main

import (
	"strings"
	"testing"
)

// TestBetterRounds: rounds are compared pairwise, in the direction that
// is better for the figure; ties do not count.
func TestBetterRounds(t *testing.T) {
	for _, tc := range []struct {
		a, b         []float64
		higherBetter bool
		wins, n      int
	}{
		{[]float64{100, 100, 100}, []float64{101, 99, 100}, true, 1, 3},
		{[]float64{100, 100, 100}, []float64{101, 99, 100}, false, 1, 3}, // latency: lower is better
		{[]float64{5, 6, 7}, []float64{6, 7, 8}, true, 3, 3},
		{[]float64{5, 6, 7, 8}, []float64{9, 9}, true, 2, 2}, // only rounds both have
	} {
		if wins, n := betterRounds(tc.a, tc.b, tc.higherBetter); wins != tc.wins || n != tc.n {
			t.Errorf("betterRounds(%v, %v, %v) = %d of %d, want %d of %d", tc.a, tc.b, tc.higherBetter, wins, n, tc.wins, tc.n)
		}
	}
}

// TestPrintAB: the report gives each figure's rounds, medians and B's
// change; figures measured on one side only are left out.
func TestPrintAB(t *testing.T) {
	var out strings.Builder
	printAB(&out, "old", "new",
		map[string][]float64{"crr": {5000, 5200, 4800, 5100}, "tcp_rr_p50": {160, 170}, "tcp_up": {6}},
		map[string][]float64{"crr": {5300, 5400, 5250, 5500}, "tcp_rr_p50": {150, 175}})
	got := out.String()
	for _, want := range []string{
		"A = old\nB = new\n",
		"connect-request-response  flows/s  5000 5200 4800 5100  5300 5400 5250 5500  5050      5350      +5.9%   4 of 4",
		"TCP 1-byte RR p50         us       160 170              150 175              165       162       -1.5%   1 of 2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "client->server") {
		t.Errorf("a figure without B rounds is listed:\n%s", got)
	}
}
