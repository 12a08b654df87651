// Command twlab is tunwall's lab tool: the services and load generators the
// end-to-end tests and benchmarks run inside the lab namespaces, and the
// bench and demo drivers themselves.
//
//	twlab serve [tcp:PORT|udp:PORT ...]      echo/hash/gen/stall services on 7001-7004 (+ extra)
//	twlab crr ADDR WORKERS SECONDS           connect-request-response rate (JSON)
//	twlab rr tcp|udp ADDR N                  1-byte round-trip latency (JSON)
//	twlab hold ADDR N                        hold N connections open
//	twlab probe tcp|udp|icmp ADDR            one echo exchange (JSON outcome)
//	twlab resolve SERVER:PORT NAME [A|AAAA]  one DNS query, A unless told (JSON: rcode, addresses)
//	twlab tls ADDR SERVERNAME                one TLS handshake with that SNI (JSON outcome)
//	twlab spray SECONDS ADDR...              TCP and UDP echoes every 20 ms (JSON outcomes)
//	twlab count IFACE QUIET_MS SECONDS       count arriving TCP/UDP/echo packets (JSON)
//	twlab bench TUNWALL OUT.json [REFGW]     kernel vs tunwall (vs refgw) benchmark
//	twlab ab TUNWALL_A TUNWALL_B [ROUNDS]    two tunwall builds in alternating rounds
//	twlab demo TUNWALL                       show allowed and blocked flows
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	if err := dispatch(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "twlab:", err)
		os.Exit(1)
	}
}

func dispatch(a []string) error {
	if len(a) == 0 {
		return errUsage
	}
	num := func(s string) int { n, _ := strconv.Atoi(s); return n }
	switch {
	case a[0] == "serve":
		return serve(a[1:]...)
	case a[0] == "crr" && len(a) == 4:
		return crr(a[1], num(a[2]), time.Duration(num(a[3]))*time.Second)
	case a[0] == "rr" && len(a) == 4:
		return rr(a[1], a[2], num(a[3]))
	case a[0] == "hold" && len(a) == 3:
		return hold(a[1], num(a[2]))
	case a[0] == "probe" && len(a) == 3:
		return probe(a[1], a[2])
	case a[0] == "resolve" && len(a) == 3:
		return resolve(a[1], a[2], "A")
	case a[0] == "resolve" && len(a) == 4:
		return resolve(a[1], a[2], a[3])
	case a[0] == "tls" && len(a) == 3:
		return tlsProbe(a[1], a[2])
	case a[0] == "spray" && len(a) >= 3:
		return spray(time.Duration(num(a[1]))*time.Second, a[2:])
	case a[0] == "count" && len(a) == 4:
		return count(a[1], time.Duration(num(a[2]))*time.Millisecond, time.Duration(num(a[3]))*time.Second)
	case a[0] == "bench" && (len(a) == 3 || len(a) == 4):
		ref := ""
		if len(a) == 4 {
			ref = a[3]
		}
		return bench(a[1], ref, a[2])
	case a[0] == "ab" && len(a) == 3:
		return ab(a[1], a[2], 4)
	case a[0] == "ab" && len(a) == 4:
		return ab(a[1], a[2], num(a[3]))
	case a[0] == "demo" && len(a) == 2:
		return demo(a[1])
	}
	return errUsage
}
