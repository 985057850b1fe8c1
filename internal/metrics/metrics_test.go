package metrics

import (
	"sync"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/wire"
)

func TestSnapshot(t *testing.T) {
	c := New()
	c.Request(200, "GET", ProtoOf(1), 3*time.Millisecond)
	c.Request(200, "GET", ProtoOf(1), 20*time.Millisecond)
	c.Request(418, "BREW", ProtoOf(2), time.Hour) // unusual code → class, method → other
	c.Request(0, "POST", ProtoOf(3), 0)
	c.Request(1000, "POST", ProtoOf(3), 0)
	c.UpstreamError(UpstreamTimeout)
	c.TokenIssued("authorization_code")
	c.TokenIssued("password") // not a grant we issue: not counted
	c.OAuthDenied("invalid_grant")
	c.OAuthDenied("made_up")
	c.BearerRejected(BearerMissing)
	c.StreamOpened()
	c.StreamOpened()
	c.StreamClosed()
	c.ConnOpened(H1)
	c.ConnOpened(H1)
	c.ConnSwitched(H1, H2)

	m := c.Snapshot()
	want := map[[3]string]uint64{
		{"200", "GET", "h1"}: 2, {"4xx", "other", "h2"}: 1, {"other", "POST", "h3"}: 2,
	}
	got := map[[3]string]uint64{}
	for _, r := range m.Requests {
		got[[3]string{r.Code, r.Method, r.Protocol}] = r.N
	}
	if len(got) != len(want) {
		t.Errorf("requests %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("requests%v = %d, want %d", k, got[k], n)
		}
	}
	h := m.Duration
	if h == nil || h.Count != 5 || len(h.Counts) != len(wire.DurationBuckets) {
		t.Fatalf("duration %+v", h)
	}
	// 0, 0 and 3ms are ≤ 5ms; 20ms ≤ 25ms; an hour only in +Inf.
	if h.Counts[0] != 3 || h.Counts[1] != 3 || h.Counts[2] != 4 || h.Counts[len(h.Counts)-1] != 4 {
		t.Errorf("cumulative counts %v", h.Counts)
	}
	if h.Sum < 3600 || h.Sum > 3601 {
		t.Errorf("sum %v", h.Sum)
	}
	if m.UpstreamErrors["timeout"] != 1 || len(m.UpstreamErrors) != 1 {
		t.Errorf("upstream %v", m.UpstreamErrors)
	}
	if m.TokensIssued["authorization_code"] != 1 || len(m.TokensIssued) != 1 {
		t.Errorf("tokens %v", m.TokensIssued)
	}
	if m.OAuthDenied["invalid_grant"] != 1 || m.OAuthDenied["other"] != 1 {
		t.Errorf("denied %v", m.OAuthDenied)
	}
	if m.BearerRejected["missing"] != 1 {
		t.Errorf("bearer %v", m.BearerRejected)
	}
	if m.OpenStreams != 1 || m.Connections["h1"] != 1 || m.Connections["h2"] != 1 {
		t.Errorf("gauges streams=%d conns=%v", m.OpenStreams, m.Connections)
	}
}

// TestLabelsBounded: every status code maps to a label, and the label set
// is fixed whatever the input.
func TestLabelsBounded(t *testing.T) {
	seen := map[string]bool{}
	for code := -5; code < 1200; code++ {
		seen[codeLabels[codeOf(code)]] = true
	}
	if len(seen) != len(codeLabels) {
		t.Errorf("%d code labels used, %d defined", len(seen), len(codeLabels))
	}
	if l := codeLabels[codeOf(404)]; l != "404" {
		t.Errorf("404 → %q", l)
	}
	if l := codeLabels[codeOf(299)]; l != "2xx" {
		t.Errorf("299 → %q", l)
	}
	if methodLabels[methodIndex("get")] != "other" {
		t.Error("method names are case-sensitive; lower case is not GET")
	}
}

func TestAddKeepsTotals(t *testing.T) {
	a, b := New(), New()
	a.Request(200, "GET", H1, time.Millisecond)
	b.Request(200, "GET", H1, time.Millisecond)
	b.Request(401, "POST", H2, time.Millisecond)
	b.StreamOpened()
	var sum wire.Metrics
	sum.Add(a.Snapshot())
	sum.Add(b.Snapshot())
	if len(sum.Requests) != 2 || sum.Duration.Count != 3 || sum.OpenStreams != 0 {
		t.Errorf("sum %+v", sum)
	}
}

// The per-request path: what the access log calls for every request.
func BenchmarkRequest(b *testing.B) {
	c := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Request(200, "POST", H2, 1500*time.Microsecond)
		}
	})
}

func TestRequestDoesNotAllocate(t *testing.T) {
	c := New()
	if n := testing.AllocsPerRun(100, func() {
		c.Request(200, "POST", H2, time.Millisecond)
		c.BearerRejected(BearerInvalid)
		c.OAuthDenied("invalid_grant")
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}

// TestFingerprint: every mutator changes the fingerprint, an unchanged
// set of counters keeps it, and opposite one-step changes of two gauges
// do not cancel out.
func TestFingerprint(t *testing.T) {
	c := New()
	steps := []struct {
		name string
		do   func()
	}{
		{"request", func() { c.Request(200, "GET", H1, time.Millisecond) }},
		{"upstream error", func() { c.UpstreamError(UpstreamTimeout) }},
		{"token", func() { c.TokenIssued("authorization_code") }},
		{"denied", func() { c.OAuthDenied("access_denied") }},
		{"bearer", func() { c.BearerRejected(BearerMissing) }},
		{"stream opened", func() { c.StreamOpened() }},
		{"conn opened", func() { c.ConnOpened(H2) }},
		{"stream closed, conn opened", func() { c.StreamClosed(); c.ConnOpened(H1) }},
		{"conn switched", func() { c.ConnSwitched(H1, H2) }},
		{"conn closed", func() { c.ConnClosed(H2) }},
	}
	seen := map[uint64]string{c.Fingerprint(): "zero"}
	for _, s := range steps {
		before := c.Fingerprint()
		if again := c.Fingerprint(); again != before {
			t.Fatalf("fingerprint changed without a change")
		}
		s.do()
		after := c.Fingerprint()
		if after == before {
			t.Errorf("%s: fingerprint unchanged", s.name)
		}
		if prev, ok := seen[after]; ok {
			t.Errorf("%s: fingerprint equals the one after %s", s.name, prev)
		}
		seen[after] = s.name
	}
}

// TestChanged: a change signals Changed once until Settle, whatever else
// changes meanwhile; a change after Settle signals again; nothing signals
// without a change.
func TestChanged(t *testing.T) {
	c := New()
	signalled := func() bool {
		select {
		case <-c.Changed():
			return true
		default:
			return false
		}
	}
	if signalled() {
		t.Fatal("signalled before any change")
	}
	for name, change := range map[string]func(){
		"request":  func() { c.Request(200, "GET", H2, time.Millisecond) },
		"upstream": func() { c.UpstreamError(UpstreamTimeout) },
		"token":    func() { c.TokenIssued("refresh_token") },
		"denied":   func() { c.OAuthDenied("nonsense") },
		"bearer":   func() { c.BearerRejected(BearerExpired) },
		"stream":   func() { c.StreamOpened(); c.StreamClosed() },
		"conn":     func() { c.ConnOpened(H1); c.ConnSwitched(H1, H2); c.ConnClosed(H2) },
	} {
		c.Settle()
		change()
		change()
		if !signalled() {
			t.Errorf("%s: no signal", name)
		}
		if signalled() {
			t.Errorf("%s: signalled twice before Settle", name)
		}
	}
	c.Settle()
	if signalled() {
		t.Error("signalled after Settle without a change")
	}
	// A change racing the reporter is never lost: after Settle, the next
	// change signals.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Request(200, "POST", H1, time.Microsecond)
			}
		}()
	}
	wg.Wait()
	if !signalled() {
		t.Error("no signal after concurrent changes")
	}
	c.Settle()
	c.ConnOpened(H3)
	if !signalled() {
		t.Error("no signal for a change after Settle")
	}
}
