package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCombine: each figure gets the paths' values and the ratios to the
// kernel path; a run without the reference leaves its fields out of
// bench.json.
func TestCombine(t *testing.T) {
	kernel := map[string]float64{"crr": 12000, "tcp_rr_p50": 25}
	tw := map[string]float64{"crr": 6000, "tcp_rr_p50": 175, "rss_per_flow": 34}
	ref := map[string]float64{"crr": 3000, "tcp_rr_p50": 250}

	find := func(figs []figure, name string) figure {
		for _, f := range figs {
			if f.Name == name {
				return f
			}
		}
		t.Fatalf("no figure %q", name)
		return figure{}
	}
	figs := combine(kernel, tw, ref)
	crr := find(figs, "connect-request-response")
	if *crr.Kernel != 12000 || *crr.Tunwall != 6000 || *crr.Reference != 3000 || *crr.Ratio != 0.5 || *crr.RefRatio != 0.25 {
		t.Errorf("crr = %s", show(crr))
	}
	rss := find(figs, "idle memory per flow (tunwall RSS)")
	if rss.Kernel != nil || rss.Ratio != nil || rss.Reference != nil || *rss.Tunwall != 34 {
		t.Errorf("rss = %s", show(rss))
	}

	plain := find(combine(kernel, tw, nil), "connect-request-response")
	if plain.Reference != nil || plain.RefRatio != nil {
		t.Errorf("without a reference: %s", show(plain))
	}
	if s := show(plain); strings.Contains(s, "reference") {
		t.Errorf("bench.json names the reference without one: %s", s)
	}
}

// TestPrintTable: the reference's columns appear only when it was measured.
func TestPrintTable(t *testing.T) {
	figs := combine(map[string]float64{"crr": 12000}, map[string]float64{"crr": 6000}, map[string]float64{"crr": 3000})
	var with, without strings.Builder
	printTable(&with, figs, true)
	printTable(&without, figs, false)
	if !strings.Contains(with.String(), "reference/kernel") || !strings.Contains(with.String(), "12000     6000             50%       3000               25%") {
		t.Errorf("with the reference:\n%s", with.String())
	}
	if strings.Contains(without.String(), "reference") || !strings.Contains(without.String(), "12000     6000             50%") {
		t.Errorf("without the reference:\n%s", without.String())
	}
}

func show(f figure) string {
	b, _ := json.Marshal(f)
	return string(b)
}
