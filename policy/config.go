package policy

import (
	"net/netip"
	"time"
)

// Config is a validated configuration file.
type Config struct {
	Source  string // file name, or "(embedded default)"
	Hash    string // short SHA-256 of the file's bytes, for the start event
	Size    int    // the file's length in bytes
	Tun     TunConfig
	Routing RoutingConfig
	Egress  EgressConfig
	Limits  Limits
	Log     LogConfig
	Policy  *Policy
	Lists   []*List // by name
	DNS     DNSConfig
	Control ControlConfig
	Capture CaptureConfig
}

// ZeroBytes returns an error if c was read from a file of zero bytes, not
// even a comment in it. Such a file means all defaults at a start (deny,
// no rules), but a config file that drops to zero bytes under a running
// tunwall is more likely a write in progress or a failed one (a full disk,
// an aborted copy) than a decision, so a reload refuses it. (A list with
// no entries is an error at any time.)
func (c *Config) ZeroBytes() Errors {
	if c.Size > 0 || c.Source == DefaultSource {
		return nil
	}
	return Errors{{File: c.Source, Msg: "the file has 0 bytes, taken for a write in progress or a failed one;" +
		" a file meant to hold only defaults needs at least a comment line"}}
}

// CaptureConfig bounds packet captures taken from the running gateway.
type CaptureConfig struct {
	Enabled  bool  // false: captures are refused
	MaxBytes int64 // largest capture file, header included
	Snaplen  int   // bytes kept of each packet
}

// ControlConfig places the control API: its unix socket and, optionally,
// a TCP listener on a loopback address.
type ControlConfig struct {
	Socket string // "" : /run/tunwall/control-NETNS-TUN.sock
	Group  string // "" : root only (0600); else that group may use it (0660)
	GID    int    // Group's id, looked up when the file is loaded; -1 without a group

	// Listen is the TCP listener's loopback address; invalid: none.
	Listen netip.AddrPort
	// TokenFile holds the bearer token the TCP listener requires (resolved
	// against the config file's directory); "": a random token is made at
	// start and kept under /run/tunwall for the CLI.
	TokenFile string
	// Token is TokenFile's content, read when the config is loaded.
	Token string
	// Hosts are the Host header names the TCP listener accepts besides
	// localhost and its own address.
	Hosts []string
}

// DNSConfig says how DNS queries through the TUN (port 53) are handled.
type DNSConfig struct {
	// BlockZero answers a blocked A/AAAA query with 0.0.0.0/:: instead of
	// NXDOMAIN.
	BlockZero bool
	// Upstream, if valid, receives every allowed query instead of the
	// server the client asked.
	Upstream netip.AddrPort
	// CacheSize bounds the address -> name cache filled from answers.
	CacheSize int
}

// DefaultQueueLength is tun.queue_length when a config does not set it.
// The kernel gives a TUN device 500, which a burst of a few hundred new
// connections overflows: the packets past it are dropped before tunwall
// sees them, and a client's lost RST leaves its flow open. The queue
// only fills while tunwall is behind, and holds no memory otherwise.
const DefaultQueueLength = 4096

// MaxQueueLength is the largest tun.queue_length accepted. The kernel
// keeps the queue of an open TUN device as one array of pointers, and
// refuses sizes much above 500,000.
const MaxQueueLength = 100000

// TunConfig describes the TUN device tunwall creates.
type TunConfig struct {
	Name      string
	MTU       int
	Addresses []netip.Prefix
	// QueueLength is how many packets the device holds for tunwall to
	// read (the link's txqueuelen); more are dropped.
	QueueLength int
}

// RoutingConfig says how traffic reaches the TUN device.
type RoutingConfig struct {
	Mode    string // none | all | split
	Include []netip.Prefix
	Exclude []netip.Prefix
	Strict  bool // fail closed: an unreachable backstop outlives the process
	// KeepBlocked keeps the backstop (and the rules that reach it) after a
	// clean stop too, until "tunwall down".
	KeepBlocked bool
	From        []string
	UIDs        []UIDRange
	Table       int
}

// Routes reports whether tunwall installs routes and rules of its own.
func (r RoutingConfig) Routes() bool { return r.Mode != "none" || len(r.From) > 0 }

// UIDRange is an inclusive range of user ids.
type UIDRange struct{ First, Last uint32 }

// EgressConfig shapes the upstream sockets.
type EgressConfig struct {
	Mark      uint32 // SO_MARK on every upstream socket; 0 disables
	Interface string // SO_BINDTODEVICE target; "" disables
}

// Limits bound the resources flows may take.
type Limits struct {
	MaxFlows       int
	MaxPendingTCP  int
	MaxUDPSessions int
	UDPIdle        time.Duration
	TCPIdle        time.Duration
	// BufferMemory is what relayed TCP flows' stack buffers may hold
	// together, in bytes; 0: an eighth of the machine's memory.
	BufferMemory int64
	// MaxFlowsPerSource bounds the active flows of one source
	// address; 0: no bound.
	MaxFlowsPerSource int
}

// LogConfig selects level, format and destination of the log.
type LogConfig struct {
	Level  string // debug | info | warn | error
	Format string // auto | json | console
	Output string // stderr | stdout | file path
}

// The wire schema: what the YAML file holds, before validation. Fields whose
// YAML form may be a scalar or a list, or a number or a string, are decoded
// loosely and checked by validate, which knows their positions.
type fileConfig struct {
	Tun     fileTun             `yaml:"tun"`
	Routing fileRouting         `yaml:"routing"`
	Egress  fileEgress          `yaml:"egress"`
	Limits  fileLimits          `yaml:"limits"`
	Log     fileLog             `yaml:"log"`
	Lists   map[string]fileList `yaml:"lists"`
	DNS     fileDNS             `yaml:"dns"`
	Control fileControl         `yaml:"control"`
	Capture fileCapture         `yaml:"capture"`
	Policy  filePolicy          `yaml:"policy"`
}

type fileControl struct {
	Socket    string   `yaml:"socket"`
	Group     string   `yaml:"group"`
	Listen    string   `yaml:"listen"`
	TokenFile string   `yaml:"token_file"`
	Hosts     []string `yaml:"hosts"`
}

type fileCapture struct {
	Enabled  bool   `yaml:"enabled"`
	MaxBytes string `yaml:"max_bytes"`
	Snaplen  int    `yaml:"snaplen"`
}

type fileDNS struct {
	BlockedAnswer string `yaml:"blocked_answer"`
	Upstream      string `yaml:"upstream"`
	CacheSize     int    `yaml:"cache_size"`
}

type fileList struct {
	File    string `yaml:"file"`
	Lenient bool   `yaml:"lenient"`
}

type fileTun struct {
	Name        string   `yaml:"name"`
	MTU         int      `yaml:"mtu"`
	Addresses   []string `yaml:"addresses"`
	QueueLength int      `yaml:"queue_length"`
}

type fileRouting struct {
	Mode    string   `yaml:"mode"`
	Include []string `yaml:"include"`
	Exclude []string `yaml:"exclude"`
	Strict  *bool    `yaml:"strict"`
	Keep    bool     `yaml:"keep_blocked"`
	From    []string `yaml:"from"`
	UIDs    []any    `yaml:"uids"`
	Table   int      `yaml:"table"`
}

type fileEgress struct {
	Mark      any    `yaml:"mark"`
	Interface string `yaml:"interface"`
}

type fileLimits struct {
	MaxFlows       int    `yaml:"max_flows"`
	MaxPendingTCP  int    `yaml:"max_pending_tcp"`
	MaxUDPSessions int    `yaml:"max_udp_sessions"`
	MaxFlowsPerSrc int    `yaml:"max_flows_per_source"`
	UDPIdle        string `yaml:"udp_idle"`
	TCPIdle        string `yaml:"tcp_idle"`
	BufferMemory   string `yaml:"buffer_memory"`
}

type fileLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	Output string `yaml:"output"`
}

type filePolicy struct {
	Default  string     `yaml:"default"`
	Mode     string     `yaml:"mode"`
	OnReload string     `yaml:"on_reload"`
	Rules    []fileRule `yaml:"rules"`
}

type fileRule struct {
	Name   string   `yaml:"name"`
	Action string   `yaml:"action"`
	Proto  any      `yaml:"proto"`
	Src    []string `yaml:"src"`
	Dst    []string `yaml:"dst"`
	Ports  []any    `yaml:"ports"`
	Users  []any    `yaml:"users"`
	Apps   []string `yaml:"apps"`
	Log    bool     `yaml:"log"`

	SrcList    []string  `yaml:"src_list"`
	DstList    []string  `yaml:"dst_list"`
	Domains    []string  `yaml:"domains"`
	DomainList []string  `yaml:"domain_list"`
	When       *fileWhen `yaml:"when"`
}

// defaults returns the wire config that an empty file means.
func defaults() fileConfig {
	return fileConfig{
		Tun: fileTun{
			Name:        "tw0",
			MTU:         1500,
			Addresses:   []string{"198.18.0.1/30", "fd7a:7475:6e77::1/126"},
			QueueLength: DefaultQueueLength,
		},
		Routing: fileRouting{Mode: "none", Table: 7475},
		Egress:  fileEgress{Mark: uint64(0x7475)},
		Limits: fileLimits{
			MaxFlows:       65536,
			MaxPendingTCP:  4096,
			MaxUDPSessions: 16384,
			UDPIdle:        "60s",
			TCPIdle:        "2h",
			BufferMemory:   "auto",
		},
		Log:     fileLog{Level: "info", Format: "auto", Output: "stderr"},
		DNS:     fileDNS{BlockedAnswer: "nxdomain", CacheSize: 65536},
		Capture: fileCapture{Enabled: true, MaxBytes: "64MiB", Snaplen: 65535},
		Policy:  filePolicy{Default: "deny", Mode: "enforce", OnReload: "keep"},
	}
}
