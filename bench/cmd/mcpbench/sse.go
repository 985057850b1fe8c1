package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The SSE figure (issue 15): memory per open stream, over HTTP/1.1 (one
// TLS connection per stream) and over HTTP/2 (many streams on each of a
// few TLS connections), from the growth of PSS (smaps_rollup, summed over
// the contender's processes; judged on) and of RSS.

// Metric keys. The HTTP/1.1 RSS key keeps its issue-7 name (the chart and
// older results files use it).
const (
	mSSEh1RSS  = "sse_kb_per_stream"
	mSSEh1PSS  = "sse_pss_kb_per_stream"
	mSSEh2RSS  = "sse_h2_kb_per_stream"
	mSSEh2PSS  = "sse_h2_pss_kb_per_stream"
	mSSEh2TTFB = "sse_h2_ttfb_p50_ms"
)

type sseResult struct {
	sseOpenResult
	Protocol    string  `json:"protocol"`
	Streams     int     `json:"streams"`
	Conns       int     `json:"connections"`
	RSSBeforeKB int64   `json:"rss_before_kb"`
	RSSAfterKB  int64   `json:"rss_after_kb"`
	PSSBeforeKB int64   `json:"pss_before_kb"`
	PSSAfterKB  int64   `json:"pss_after_kb"`
	Processes   int     `json:"processes"`
	KBPerStream float64 `json:"kb_per_stream"` // RSS growth
	PSSPerStrKB float64 `json:"pss_kb_per_stream"`
}

// ssePhase: for each protocol and contender, restarted fresh, the memory
// of its processes before and with the streams open, and the time to first
// event of each stream.
func (b *bench) ssePhase(cs []*contender) error {
	for run := range b.p.SSERuns {
		for _, proto := range []string{"h1", "h2"} {
			for _, c := range rotate(cs, run) {
				if err := b.sseOnce(c, proto, run); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (b *bench) sseOnce(c *contender, proto string, run int) error {
	// Fresh processes: memory grown by earlier loads would hide the
	// streams' (the proxies reconnect to a restarted backend).
	c.stop()
	if err := c.start(); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	time.Sleep(500 * time.Millisecond)
	before, _ := treeMem(c.rssPID())
	const limit = 150 * time.Second
	var (
		r       sseOpenResult
		closeFn func()
		s       = sseResult{Protocol: proto}
	)
	if proto == "h1" {
		s.Streams, s.Conns = b.p.SSEStreams, b.p.SSEStreams
		var streams []*sseStream
		streams, r = b.openSSE(c.t, b.p.SSEStreams, b.p.SSEConc, limit)
		closeFn = func() { closeSSE(streams) }
	} else {
		s.Streams, s.Conns = b.p.SSEH2Conns*b.p.SSEH2Streams, b.p.SSEH2Conns
		var h *sseH2
		h, r = b.openSSEH2(c.t, b.p.SSEH2Conns, b.p.SSEH2Streams, b.p.SSEConc, limit)
		closeFn = h.close
	}
	time.Sleep(time.Second)
	after, pids := treeMem(c.rssPID())
	closeFn()
	s.sseOpenResult = r
	s.RSSBeforeKB, s.RSSAfterKB, s.PSSBeforeKB, s.PSSAfterKB, s.Processes = before.RSS, after.RSS, before.PSS, after.PSS, len(pids)
	if r.Opened > 0 {
		s.KBPerStream = float64(after.RSS-before.RSS) / float64(r.Opened)
		s.PSSPerStrKB = float64(after.PSS-before.PSS) / float64(r.Opened)
	}
	if proto == "h1" {
		b.res.add("sse_ttfb_p50_ms", c.name, r.TTFBp50, s)
		b.res.add("sse_ttfb_p99_ms", c.name, r.TTFBp99, nil)
		b.res.add(mSSEh1RSS, c.name, s.KBPerStream, nil)
		b.res.add(mSSEh1PSS, c.name, s.PSSPerStrKB, nil)
		b.res.add("sse_rss_mb", c.name, float64(after.RSS)/1024, nil)
	} else {
		b.res.add(mSSEh2TTFB, c.name, r.TTFBp50, s)
		b.res.add(mSSEh2RSS, c.name, s.KBPerStream, nil)
		b.res.add(mSSEh2PSS, c.name, s.PSSPerStrKB, nil)
	}
	logf("run %d sse %s %-8s %d/%d streams on %d connections in %.1fs  ttfb p50 %.2f ms p99 %.2f ms  PSS %.1f → %.1f MiB, RSS %.1f → %.1f MiB (%d processes): PSS %.1f KiB/stream, RSS %.1f KiB/stream %s",
		run+1, proto, c.name, r.Opened, s.Streams, s.Conns, r.Seconds, r.TTFBp50, r.TTFBp99, mib(before.PSS), mib(after.PSS), mib(before.RSS), mib(after.RSS),
		len(pids), s.PSSPerStrKB, s.KBPerStream, r.FirstErr)
	time.Sleep(time.Second) // let the servers close the sockets
	return nil
}

// sseH2 is the HTTP/2 streams of one SSE run: one transport (and so one
// connection) per client, many streams on each.
type sseH2 struct {
	mu      sync.Mutex
	trs     []*http.Transport
	bodies  []io.Closer
	cancels []context.CancelFunc
}

func (h *sseH2) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.cancels {
		c()
	}
	for _, b := range h.bodies {
		b.Close()
	}
	for _, t := range h.trs {
		t.CloseIdleConnections()
	}
}

// openSSEH2 opens conns HTTP/2 connections to t (TLS, or h2c for the plain
// backend), each with per SSE streams: the first stream alone (it makes
// the connection), then the others together; a few connections at a time
// (conc streams in flight at most, rounded to whole connections). Time to
// first event is from the request to the first complete event, for the
// streams on an established connection.
func (b *bench) openSSEH2(t target, conns, per, conc int, limit time.Duration) (*sseH2, sseOpenResult) {
	h := &sseH2{}
	var (
		mu       sync.Mutex
		ttfb     []time.Duration
		opened   int
		failed   int
		firstErr string
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		failed++
		if firstErr == "" {
			firstErr = err.Error()
		}
		mu.Unlock()
	}
	deadline := time.Now().Add(limit)
	start := time.Now()
	one := func(c *http.Client, record bool) error {
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(20*time.Second, cancel) // until the first event
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.baseURL()+"/sse", nil)
		req.Header.Set("Accept", "text/event-stream")
		if t.token != "" {
			req.Header.Set("Authorization", "Bearer "+t.token)
		}
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			timer.Stop()
			cancel()
			return err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			timer.Stop()
			cancel()
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		err = readEvent(resp.Body)
		d := time.Since(t0)
		if !timer.Stop() && err == nil {
			err = errors.New("first event after 20 s")
		}
		if err != nil {
			resp.Body.Close()
			cancel()
			return err
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, resp.Body)
		h.cancels = append(h.cancels, cancel)
		h.mu.Unlock()
		mu.Lock()
		opened++
		if record {
			ttfb = append(ttfb, d)
		}
		mu.Unlock()
		return nil
	}
	workers := max(1, min(conns, conc/8))
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(conns) && time.Now().Before(deadline) {
				tr := b.transport(t, true)
				tr.MaxConnsPerHost = 1 // one connection per client
				h.mu.Lock()
				h.trs = append(h.trs, tr)
				h.mu.Unlock()
				c := &http.Client{Transport: tr}
				if err := one(c, false); err != nil {
					fail(err)
					continue
				}
				var sw sync.WaitGroup
				for range per - 1 {
					sw.Go(func() {
						if err := one(c, true); err != nil {
							fail(err)
						}
					})
				}
				sw.Wait()
			}
		})
	}
	wg.Wait()
	n := conns * per
	r := sseOpenResult{Opened: opened, Failed: max(failed, n-opened), Seconds: time.Since(start).Seconds(), FirstErr: firstErr}
	if len(ttfb) > 0 {
		slices.Sort(ttfb)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
		r.TTFBp50, r.TTFBp99 = ms(pct(ttfb, 50)), ms(pct(ttfb, 99))
	}
	return h, r
}

// readEvent reads body until the end of the first SSE event (a blank
// line).
func readEvent(body io.Reader) error {
	var got []byte
	buf := make([]byte, 1024)
	for !bytes.Contains(got, []byte("\n\n")) {
		k, err := body.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			if err == io.EOF {
				err = errNoSSEEvent
			}
			return err
		}
	}
	return nil
}
