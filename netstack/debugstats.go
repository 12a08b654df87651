package netstack

import (
	"fmt"
	"io"
	"reflect"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// DumpStackStats writes every non-zero counter of the gVisor stack to w,
// one "path value" line each. For diagnostics.
func (g *Gateway) DumpStackStats(w io.Writer) {
	dumpCounters(w, "", reflect.ValueOf(g.stack.Stats()))
}

func dumpCounters(w io.Writer, path string, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		if c, ok := v.Interface().(*tcpip.StatCounter); ok {
			if n := c.Value(); n != 0 {
				fmt.Fprintf(w, "%s %d\n", path, n)
			}
			return
		}
		dumpCounters(w, path, v.Elem())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				dumpCounters(w, path+"."+v.Type().Field(i).Name, v.Field(i))
			}
		}
	}
}
