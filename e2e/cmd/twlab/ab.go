package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"text/tabwriter"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// abFigures are what an A/B run compares, in print order, with whether a
// larger value is better.
var abFigures = []struct {
	key, name, unit string
	higherBetter    bool
}{
	{"crr", "connect-request-response", "flows/s", true},
	{"tcp_rr_p50", "TCP 1-byte RR p50", "us", false},
	{"udp_rr_p50", "UDP 1-byte RR p50", "us", false},
	{"tcp_up", "TCP 1 flow client->server", "Gbit/s", true},
	{"tcp_down", "TCP 1 flow server->client", "Gbit/s", true},
}

// ab compares two tunwall builds in one lab: each round runs a, then b
// (b first in every other round), within a minute of each other, and
// the report gives every round's values, the medians and b's change per
// figure. Machines that swing from run to run hide small changes from
// separate bench runs; alternating rounds do not.
func ab(a, b string, rounds int) error {
	if rounds < 1 {
		return errors.New("ab: rounds must be at least 1")
	}
	bins := []string{a, b}
	for _, bin := range bins {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("ab: %w", err)
		}
	}
	lb, err := newBenchLab("ab", "twa")
	if err != nil {
		return err
	}
	defer lb.close()

	runs := [2]map[string][]float64{{}, {}}
	for r := range rounds {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			fmt.Printf("round %d/%d: %s ...\n", r+1, rounds, bins[i])
			m, err := abRound(lb, bins[i])
			if err != nil {
				return fmt.Errorf("%s: %w", bins[i], err)
			}
			for k, v := range m {
				runs[i][k] = append(runs[i][k], v)
			}
		}
	}
	printAB(os.Stdout, a, b, runs[0], runs[1])
	return nil
}

// abRound starts one build, measures it, and stops it.
func abRound(lb *benchLab, bin string) (map[string]float64, error) {
	// Start, not StartTunwall: an older build does not report readiness.
	tw, err := lb.Start([]string{bin, "run", "-c", lb.cfg}, lb.log, "twbench")
	if err != nil {
		return nil, err
	}
	defer lb.Unroute()
	if err := lb.Route("twbench"); err != nil {
		tw.Stop(time.Second)
		return nil, err
	}
	m, err := abMeasure(lb)
	if serr := tw.Stop(10 * time.Second); err == nil {
		err = serr
	}
	return m, err
}

// abMeasure takes one round's figures on the path through tunwall.
func abMeasure(lb *benchLab) (map[string]float64, error) {
	m := map[string]float64{}
	for _, measure := range []measurement{connRate, latency} {
		got, err := measure(lb.Lab, lb.self)
		if err != nil {
			return nil, err
		}
		maps.Copy(m, got)
	}
	for _, t := range []struct {
		key  string
		args []string
	}{{"tcp_up", nil}, {"tcp_down", []string{"-R"}}} {
		bps, _, err := iperf(lb.Lab, lab.ServerV4, t.args...)
		if err != nil {
			return nil, err
		}
		m[t.key] = bps / 1e9
	}
	return m, nil
}

// printAB writes the comparison: per figure the rounds of a and b, their
// medians, b's change against a, and in how many rounds b did better than
// a did in the same round (a and b of one round run within a minute of
// each other; a change that wins nearly every round is more than the
// noise).
func printAB(w io.Writer, a, b string, ra, rb map[string][]float64) {
	fmt.Fprintf(w, "A = %s\nB = %s\n", a, b)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tunit\tA rounds\tB rounds\tA median\tB median\tB vs A\tB better in\t")
	for _, f := range abFigures {
		va, vb := ra[f.key], rb[f.key]
		if len(va) == 0 || len(vb) == 0 {
			continue
		}
		ma, mb := median(va), median(vb)
		change := "-"
		if ma != 0 {
			change = fmt.Sprintf("%+.1f%%", (mb-ma)/ma*100)
		}
		wins, n := betterRounds(va, vb, f.higherBetter)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d of %d\t\n", f.name, f.unit, list(va), list(vb), fmtNum(ma), fmtNum(mb), change, wins, n)
	}
	tw.Flush()
}

// betterRounds counts the rounds in which b did better than a (a tie is
// not better), over the rounds both have.
func betterRounds(a, b []float64, higherBetter bool) (wins, n int) {
	n = min(len(a), len(b))
	for i := range n {
		if higherBetter && b[i] > a[i] || !higherBetter && b[i] < a[i] {
			wins++
		}
	}
	return wins, n
}

func list(v []float64) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += fmtNum(x)
	}
	return s
}

func fmtNum(v float64) string { return num(&v) }
