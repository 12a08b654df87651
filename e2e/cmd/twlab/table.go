package main

import (
	"fmt"
	"os"
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
	{"rss_per_flow", "idle memory per flow (tunwall RSS)", "KiB", "tunwall only"},
	{"cpu_per_gb", "CPU per GB, 1 flow up (machine)", "CPU s/GB", "all cores, both ends included"},
	{"proc_cpu_per_gb", "CPU per GB, 1 flow up (tunwall)", "CPU s/GB", "tunwall only"},
}

func combine(kernel, tw map[string]float64) []figure {
	var figs []figure
	for _, s := range figureSpecs {
		f := figure{Name: s.name, Unit: s.unit, Note: s.note}
		if v, ok := kernel[s.key]; ok {
			f.Kernel = &v
		}
		if v, ok := tw[s.key]; ok {
			f.Tunwall = &v
		}
		if f.Kernel != nil && f.Tunwall != nil && *f.Kernel != 0 {
			r := *f.Tunwall / *f.Kernel
			f.Ratio = &r
		}
		figs = append(figs, f)
	}
	return figs
}

func printTable(figs []figure) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "figure\tunit\tkernel\ttunwall\ttunwall/kernel\t")
	for _, f := range figs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t\n", f.Name, f.Unit, num(f.Kernel), num(f.Tunwall), pct(f.Ratio))
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
