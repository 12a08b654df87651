package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/google/gopacket/pcapgo"

	"github.com/tunwall/tunwall/internal/control"
	"github.com/tunwall/tunwall/policy"
)

// cmdCapture writes a pcap file of one flow's packets or of the refused
// packets, taken by the running tunwall, until the flow ends, a bound is
// reached, or the user interrupts it. The file holds whole packets only.
func cmdCapture(args []string, stdout, stderr io.Writer) error {
	var denied bool
	var flowID, file, count, maxBytes string
	q := url.Values{}
	check := func(rest []string) error {
		if err := noArgs("capture", rest); err != nil {
			return err
		}
		switch {
		case denied == (flowID != ""):
			return usageError{errors.New("capture: give --denied or --flow ID, one of them")}
		case denied:
			q.Set("denied", "")
		default:
			if id, err := strconv.ParseUint(flowID, 10, 64); err != nil || id == 0 {
				return usageError{fmt.Errorf("capture: --flow %q is not a flow ID", flowID)}
			}
			q.Set("flow", flowID)
		}
		if file == "" {
			return usageError{errors.New("capture: -w FILE is required (- for standard output)")}
		}
		if count != "" {
			if _, err := strconv.ParseUint(count, 10, 64); err != nil {
				return usageError{fmt.Errorf("capture: --count %q is not a number", count)}
			}
			q.Set("count", count)
		}
		if maxBytes != "" {
			n, err := policy.ParseSize(maxBytes)
			if err != nil {
				return usageError{fmt.Errorf("capture: --max-bytes: %v", err)}
			}
			if n < control.MinCaptureBytes {
				return usageError{fmt.Errorf("capture: --max-bytes %s: want at least %d bytes (the file's header and one packet's)", maxBytes, control.MinCaptureBytes)}
			}
			q.Set("max_bytes", maxBytes)
		}
		return nil
	}
	c, err := liveFlags("capture", args, check, boolFlag{"denied", &denied}, stringFlag{"flow", &flowID},
		stringFlag{"w", &file}, stringFlag{"count", &count}, stringFlag{"max-bytes", &maxBytes})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	resp, err := c.Stream(ctx, "/v1/capture?"+q.Encode())
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	defer resp.Body.Close()
	r, err := pcapgo.NewReader(resp.Body)
	if err != nil {
		return fmt.Errorf("capture: reading the capture: %w", err)
	}
	out, summary := stdout, stdout
	if file == "-" {
		summary = stderr
	} else {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		defer f.Close()
		out = f
	}
	w := pcapgo.NewWriter(out)
	if err := w.WriteFileHeader(r.Snaplen(), r.LinkType()); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if file != "-" {
		fmt.Fprintf(summary, "capturing to %s; interrupt to stop\n", file)
	}
	n := 0
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			end := resp.Trailer.Get(control.TrailerEnd)
			switch {
			case ctx.Err() != nil:
				end = "interrupted"
			case errors.Is(err, io.EOF) && end != "":
			default:
				return fmt.Errorf("capture: after %d packets: %v", n, err)
			}
			fmt.Fprintf(summary, "%d packets written (ended: %s", n, end)
			if d := resp.Trailer.Get(control.TrailerDropped); d != "" && d != "0" {
				fmt.Fprintf(summary, "; %s dropped: the capture fell behind", d)
			}
			fmt.Fprintln(summary, ")")
			return nil
		}
		if err := w.WritePacket(ci, data); err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		n++
	}
}
