package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestTimeWindows(t *testing.T) {
	p := mustParse(t, `
default: allow
rules:
  - name: school-hours
    action: reject
    proto: tcp
    ports: [443]
    when: {days: [mon-fri], time: ["08:00-12:30", "13:30-15:00"], zone: Europe/Berlin}
  - name: late-night
    action: deny
    when: {days: [fri, sat], time: ["22:00-02:00"], zone: Europe/Berlin}
  - name: sundays
    action: reject
    proto: udp
    when: {days: [sun], zone: UTC}
`)
	// 2026-11-23 is a Monday; Berlin is UTC+1 in November.
	at := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04 MST", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	flow := func(proto Proto, port uint16, when string) Flow {
		return Flow{Proto: proto, Src: netip.MustParseAddrPort("10.0.0.2:40000"),
			Dst: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port), At: at(when)}
	}
	for _, tc := range []struct {
		flow Flow
		want string
	}{
		{flow(TCP, 443, "2026-11-23 07:00 UTC"), "school-hours"}, // Mon 08:00 Berlin: start is inside
		{flow(TCP, 443, "2026-11-23 06:59 UTC"), DefaultRule},    // 07:59
		{flow(TCP, 443, "2026-11-23 11:29 UTC"), "school-hours"}, // 12:29
		{flow(TCP, 443, "2026-11-23 11:30 UTC"), DefaultRule},    // 12:30: end is outside
		{flow(TCP, 443, "2026-11-23 12:45 UTC"), "school-hours"}, // 13:45, second span
		{flow(TCP, 80, "2026-11-23 10:00 UTC"), DefaultRule},     // other port
		{flow(TCP, 443, "2026-11-28 10:00 UTC"), DefaultRule},    // Saturday
		{flow(TCP, 80, "2026-11-27 21:30 UTC"), "late-night"},    // Fri 22:30
		{flow(TCP, 80, "2026-11-28 00:30 UTC"), "late-night"},    // Sat 01:30 belongs to Friday night
		{flow(TCP, 80, "2026-11-29 00:30 UTC"), "late-night"},    // Sun 01:30 belongs to Saturday night
		{flow(TCP, 80, "2026-11-30 00:30 UTC"), DefaultRule},     // Mon 01:30: Sunday night is not listed
		{flow(TCP, 80, "2026-11-28 01:00 UTC"), DefaultRule},     // Sat 02:00: end is outside
		{flow(UDP, 53, "2026-11-29 23:59 UTC"), "sundays"},
		{flow(UDP, 53, "2026-11-30 00:00 UTC"), DefaultRule},
	} {
		if got := p.Decide(tc.flow).Rule; got != tc.want {
			t.Errorf("%v port %d at %s (%s): rule %q, want %q", tc.flow.Proto, tc.flow.Dst.Port(), tc.flow.At.Format(time.RFC3339), tc.flow.At.In(mustZone(t, "Europe/Berlin")).Format("Mon 15:04"), got, tc.want)
		}
		if n := testing.AllocsPerRun(50, func() { p.Decide(tc.flow) }); n != 0 {
			t.Errorf("%v allocations per decision", n)
		}
	}
	// A window never seen by At uses the clock: a rule for every day, all day.
	always := mustParse(t, "default: allow\nrules:\n  - {name: all-day, action: deny, when: {time: [\"00:00-24:00\"]}}\n")
	if got := always.Decide(Flow{Proto: TCP, Src: netip.MustParseAddrPort("10.0.0.2:1"), Dst: netip.MustParseAddrPort("192.0.2.1:80")}).Rule; got != "all-day" {
		t.Errorf("00:00-24:00 now: rule %q", got)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestTimeWindowErrors(t *testing.T) {
	for _, tc := range []struct{ when, want string }{
		{`{days: [someday]}`, `test.yaml:5:21: rule "w": day "someday": want mon, tue`},
		{`{time: ["9-17"]}`, `rule "w": time "9-17": want HH:MM-HH:MM`},
		{`{time: ["09:00-09:00"]}`, `rule "w": time "09:00-09:00" is empty`},
		{`{time: ["24:00-02:00"]}`, `rule "w": time "24:00-02:00": want HH:MM`},
		{`{time: ["09:60-10:00"]}`, `want HH:MM`},
		{`{zone: Mars/Olympus}`, `rule "w": unknown time zone "Mars/Olympus"`},
		{`{days: []}`, `rule "w": empty list (omit days for every day)`},
		{`{hours: [1]}`, `unknown field "hours"`},
	} {
		_, err := Parse("test.yaml", []byte("policy:\n  rules:\n    - name: w\n      action: deny\n      when: "+tc.when+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("when %s: error %v, want %q", tc.when, err, tc.want)
		}
	}
}
