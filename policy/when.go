package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // named zones work on machines without a zoneinfo database
)

// fileWhen is a rule's time window as written.
type fileWhen struct {
	Days []string `yaml:"days"` // mon..sun or ranges like mon-fri; omitted: every day
	Time []string `yaml:"time"` // "HH:MM-HH:MM" spans; omitted: all day
	Zone string   `yaml:"zone"` // IANA zone; omitted: the machine's local zone
}

// window is a compiled time window: a rule with one matches only inside.
type window struct {
	days  uint8 // bit d: time.Weekday d
	spans []span
	loc   *time.Location
}

// span is [from, to) in minutes of the day; from > to runs past midnight
// and belongs to the day it starts on.
type span struct{ from, to int }

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// contains reports whether t falls inside the window.
func (w *window) contains(t time.Time) bool {
	lt := t.In(w.loc)
	day := lt.Weekday()
	if len(w.spans) == 0 {
		return w.days&(1<<day) != 0
	}
	m := lt.Hour()*60 + lt.Minute()
	yesterday := (day + 6) % 7
	for _, s := range w.spans {
		if s.from < s.to {
			if m >= s.from && m < s.to && w.days&(1<<day) != 0 {
				return true
			}
			continue
		}
		if m >= s.from && w.days&(1<<day) != 0 || m < s.to && w.days&(1<<yesterday) != 0 {
			return true
		}
	}
	return false
}

// parseWhen compiles a window; errors come back with the field they concern.
func parseWhen(w *fileWhen, fail func(field, format string, args ...any)) *window {
	win := &window{loc: time.Local}
	if w.Zone != "" {
		loc, err := time.LoadLocation(w.Zone)
		if err != nil {
			fail("when.zone", "unknown time zone %q", w.Zone)
		} else {
			win.loc = loc
		}
	}
	if w.Days == nil {
		win.days = 0x7f
	} else if len(w.Days) == 0 {
		fail("when.days", "empty list (omit days for every day)")
	}
	for j, d := range w.Days {
		bits, err := parseDays(d)
		if err != nil {
			fail(fmt.Sprintf("when.days[%d]", j), "%v", err)
		}
		win.days |= bits
	}
	if w.Time != nil && len(w.Time) == 0 {
		fail("when.time", "empty list (omit time for all day)")
	}
	for j, t := range w.Time {
		s, err := parseSpan(t)
		if err != nil {
			fail(fmt.Sprintf("when.time[%d]", j), "%v", err)
			continue
		}
		win.spans = append(win.spans, s)
	}
	return win
}

// parseDays reads "mon" or a range "mon-fri" (which may wrap: "fri-mon").
func parseDays(s string) (uint8, error) {
	lo, hi, isRange := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "-")
	a, ok := weekdays[lo]
	if !isRange {
		hi = lo
	}
	b, ok2 := weekdays[hi]
	if !ok || !ok2 {
		return 0, fmt.Errorf("day %q: want mon, tue, wed, thu, fri, sat, sun or a range like mon-fri", s)
	}
	var bits uint8
	for d := a; ; d = (d + 1) % 7 {
		bits |= 1 << d
		if d == b {
			return bits, nil
		}
	}
}

// parseSpan reads "HH:MM-HH:MM"; the end may be 24:00.
func parseSpan(s string) (span, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	from, err1 := parseClock(a, false)
	to, err2 := parseClock(b, true)
	switch {
	case !ok || err1 != nil || err2 != nil:
		return span{}, fmt.Errorf("time %q: want HH:MM-HH:MM (24-hour clock, e.g. 09:00-17:30 or 22:00-06:00)", s)
	case from == 0 && to == 24*60:
		return span{0, 24 * 60}, nil
	case from == to%(24*60):
		return span{}, fmt.Errorf("time %q is empty (start equals end; omit time for all day)", s)
	case to == 24*60:
		to = 0 // up to midnight: a span past midnight that ends at once
	}
	return span{from, to}, nil
}

func parseClock(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(m) != 2 || hh < 0 || mm < 0 || mm > 59 || hh > 24 || hh == 24 && (mm != 0 || !end) {
		return 0, fmt.Errorf("bad clock time %q", s)
	}
	return hh*60 + mm, nil
}
