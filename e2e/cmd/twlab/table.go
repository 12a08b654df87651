package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// figureSpecs names the benchmark figures in print order.
var figureSpecs = []struct{ key, name, unit, note string }{
	{"tcp_up", "TCP 1 flow client->server", "Gbit/s", ""},
	{"tcp_down", "TCP 1 flow server->client", "Gbit/s", ""},
	{"tcp_4", "TCP 4 flows", "Gbit/s", ""},
	{"crr", "connect-request-response", "flows/s", ""},
	{"tcp_rr_p50", "TCP 1-byte RR p50", "us", ""},
	{"tcp_rr_p99", "TCP 1-byte RR p99", "us", ""},
	{"udp_rr_p50", "UDP 1-byte RR p50", "us", ""},
	{"udp_rr_p99", "UDP 1-byte RR p99", "us", ""},
	{"mem_per_flow", "idle memory per flow (system)", "KiB", "MemTotal-MemAvailable delta / flows"},
	{"rss_per_flow", "idle memory per flow (tunwall RSS)", "KiB", "the gateway process only"},
	{"cpu_per_gb", "CPU per GB, 1 flow up (machine)", "CPU s/GB", "all cores, both ends included"},
	{"proc_cpu_per_gb", "CPU per GB, 1 flow up (tunwall)", "CPU s/GB", "the gateway process only"},
}

// combine pairs each figure's values; ref may be nil (no reference path).
func combine(kernel, tw, ref map[string]float64) []figure {
	var figs []figure
	ratio := func(v, k *float64) *float64 {
		if v == nil || k == nil || *k == 0 {
			return nil
		}
		r := *v / *k
		return &r
	}
	for _, s := range figureSpecs {
		f := figure{Name: s.name, Unit: s.unit, Note: s.note}
		f.Kernel, f.Tunwall, f.Reference = value(kernel, s.key), value(tw, s.key), value(ref, s.key)
		f.Ratio, f.RefRatio = ratio(f.Tunwall, f.Kernel), ratio(f.Reference, f.Kernel)
		figs = append(figs, f)
	}
	return figs
}

func value(m map[string]float64, key string) *float64 {
	if v, ok := m[key]; ok {
		return &v
	}
	return nil
}

// printTable writes the figures; withRef adds the reference's columns.
func printTable(out io.Writer, figs []figure, withRef bool) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "figure\tunit\tkernel\ttunwall\ttunwall/kernel\t"
	if withRef {
		head += "reference\treference/kernel\t"
	}
	fmt.Fprintln(w, head)
	for _, f := range figs {
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t", f.Name, f.Unit, num(f.Kernel), num(f.Tunwall), pct(f.Ratio))
		if withRef {
			line += fmt.Sprintf("%s\t%s\t", num(f.Reference), pct(f.RefRatio))
		}
		fmt.Fprintln(w, line)
	}
	w.Flush()
}

func num(v *float64) string {
	switch {
	case v == nil:
		return "-"
	case *v >= 100:
		return fmt.Sprintf("%.0f", *v)
	}
	return fmt.Sprintf("%.2f", *v)
}

func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *v*100)
}
