package control

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tunwall/tunwall/netstack"
)

// collector turns the backend's snapshot into Prometheus metrics at each
// scrape: nothing is counted twice and the data path pays nothing for it.
type collector struct {
	b Backend

	active, judged, bytes, drops, hits, defHits, decisions                    *prometheus.Desc
	packets, pending, udp, endpoints, buffers, mss, reloadsFailed, policyInfo *prometheus.Desc
	stackBuffers, flowBufferMax, fragmented, socketsReused                    *prometheus.Desc
}

func newCollector(b Backend) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tunwall_"+name, help, labels, nil)
	}
	return &collector{
		b:             b,
		active:        d("flows_active", "Live flows.", "proto"),
		judged:        d("flows_total", "New flows judged by the policy, by the action of their verdict.", "proto", "action"),
		bytes:         d("bytes_total", "Payload bytes relayed; out is from the originator to the destination.", "direction"),
		drops:         d("drops_total", "Refusals: policy (flows, their retries, blocked DNS names), limit, malformed packets, upstream unreachable, packets to multicast or broadcast addresses.", "reason"),
		hits:          d("rule_hits_total", "New flows and DNS names each rule decided since the policy was loaded.", "rule"),
		defHits:       d("default_hits_total", "New flows and DNS names no rule matched since the policy was loaded."),
		decisions:     d("decision_duration_seconds", "Time to judge a new flow."),
		packets:       d("tun_packets_total", "Packets read from (in) and written to (out) the TUN device.", "direction"),
		pending:       d("pending_handshakes", "TCP handshakes waiting for their upstream connection."),
		udp:           d("udp_sessions", "Live UDP sessions."),
		endpoints:     d("stack_endpoints", "TCP and UDP endpoints in the userspace stack, closing ones (TIME_WAIT) included."),
		buffers:       d("relay_buffers", "64 KiB relay buffers held by flows whose receiver has not yet taken what was read for it."),
		stackBuffers:  d("stack_buffer_bytes", "What the userspace stack's TCP buffers may hold now: the sizes of every TCP endpoint's send and receive buffers."),
		flowBufferMax: d("flow_buffer_max_bytes", "The largest stack buffer, each way, limits.buffer_memory gives a relayed TCP flow now."),
		mss:           d("tcp_mss_clamped_total", "Client SYNs whose MSS option was lowered to fit this host's path back to the client."),
		fragmented:    d("ipv6_fragmented_total", "IPv6 packets to a client split into fragments to fit this host's path back to the client."),
		socketsReused: d("upstream_sockets_reused_total", "Upstream TCP connections made on a host socket an ended flow left, instead of a new one."),
		reloadsFailed: d("reloads_failed_total", "Reloads refused because the file was bad."),
		policyInfo:    d("policy_info", "The policy in force (value 1).", "hash", "mode"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := c.b.Metrics()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for i, p := range netstack.Protos {
		gauge(c.active, m.Active[i], p.String())
		for a, act := range netstack.Actions {
			counter(c.judged, m.Judged[i][a], p.String(), act.String())
		}
	}
	counter(c.bytes, m.Bytes.Out, "out")
	counter(c.bytes, m.Bytes.In, "in")
	counter(c.drops, m.DropsPolicy, "policy")
	counter(c.drops, m.DropsLimit, "limit")
	counter(c.drops, m.DropsMalformed, "malformed")
	counter(c.drops, m.DropsUpstream, "upstream_unreachable")
	counter(c.drops, m.DropsNotUnicast, "not_unicast")
	counter(c.packets, m.PacketsIn, "in")
	counter(c.packets, m.PacketsOut, "out")
	gauge(c.pending, m.Pending)
	gauge(c.udp, m.UDP)
	gauge(c.endpoints, m.Endpoints)
	gauge(c.buffers, m.RelayBuffers)
	gauge(c.stackBuffers, int(m.StackBuffers))
	gauge(c.flowBufferMax, int(m.FlowBufferMax))
	counter(c.mss, m.MSSClamped)
	counter(c.fragmented, m.Fragmented)
	counter(c.socketsReused, m.SocketsReused)

	buckets := make(map[float64]uint64, len(netstack.DecisionBuckets))
	var n uint64
	for i, bound := range netstack.DecisionBuckets {
		n += m.Decisions[i]
		buckets[bound.Seconds()] = n
	}
	n += m.Decisions[len(netstack.DecisionBuckets)]
	ch <- prometheus.MustNewConstHistogram(c.decisions, n, m.DecisionSum.Seconds(), buckets)

	p := c.b.Policy()
	seen := make(map[string]bool, len(p.Rules))
	for _, r := range p.Rules {
		if !seen[r.Name] { // names are unique in a valid policy; stay safe anyway
			seen[r.Name] = true
			counter(c.hits, r.Hits, r.Name)
		}
	}
	counter(c.defHits, p.DefaultHits)
	counter(c.reloadsFailed, uint64(max(p.ReloadsFailed, 0)))
	gauge(c.policyInfo, 1, p.Hash, p.Mode)
}

// metricsHandler serves the backend's metrics with the Go runtime's and
// the process's own.
func metricsHandler(b Backend) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(b), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
