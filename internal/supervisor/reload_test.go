package supervisor

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReloadRequestsCoalesce: requests that arrive while a reload runs are
// answered by exactly one further reload, none is dropped, and a request is
// never answered by a reload that started before it was made.
func TestReloadRequestsCoalesce(t *testing.T) {
	s := &Supervisor{wake: make(chan struct{}, 1)}
	var (
		mu      sync.Mutex
		runs    []string
		started = make(chan int, 16)
		release = make(chan struct{})
	)
	s.runReload = func(trigger string) ReloadResult {
		mu.Lock()
		runs = append(runs, trigger)
		n := len(runs)
		mu.Unlock()
		started <- n
		<-release
		return ReloadResult{OK: true, Trigger: fmt.Sprintf("run %d", n)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A request sent before the reloader runs waits for it: nothing is lost
	// to a consumer that has not started yet.
	first := make(chan ReloadResult, 1)
	go func() { first <- s.requestReload("first") }()
	waitPending(t, s, 1)
	go s.reloader(ctx)
	if n := <-started; n != 1 {
		t.Fatalf("run %d started, want 1", n)
	}

	// While run 1 is blocked, five requests and a signal arrive.
	const late = 5
	results := make(chan ReloadResult, late)
	for i := range late {
		go func() { results <- s.requestReload(fmt.Sprintf("late-%d", i)) }()
	}
	s.enqueueReload("SIGHUP", nil)
	waitPending(t, s, late+1)

	release <- struct{}{}
	if r := <-first; r.Trigger != "run 1" {
		t.Fatalf("first request answered by %q, want run 1", r.Trigger)
	}
	if n := <-started; n != 2 {
		t.Fatalf("run %d started, want 2", n)
	}
	release <- struct{}{}
	for range late {
		select {
		case r := <-results:
			if r.Trigger != "run 2" {
				t.Errorf("late request answered by %q, want run 2", r.Trigger)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a late request was never answered")
		}
	}
	select {
	case n := <-started:
		t.Fatalf("unexpected run %d: the late requests should coalesce into one", n)
	case <-time.After(200 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != 2 || runs[0] != "first" {
		t.Fatalf("runs = %q", runs)
	}
}

func waitPending(t *testing.T, s *Supervisor, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.reqMu.Lock()
		got := len(s.pending)
		s.reqMu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pending requests never reached %d", n)
}

// TestUpgradeWhileReloadPending: an upgrade asked for while a reload runs,
// together with more reload requests, waits for that reload; the pending
// reloads then run as one, and the upgrade after them, once, so the next
// binary inherits the workers of the newest configuration. Without a
// control connection nobody is answered twice.
func TestUpgradeWhileReloadPending(t *testing.T) {
	s := &Supervisor{wake: make(chan struct{}, 1)}
	var (
		mu      sync.Mutex
		order   []string
		started = make(chan string, 16)
		release = make(chan struct{})
	)
	s.runReload = func(trigger string) ReloadResult {
		mu.Lock()
		order = append(order, "reload: "+trigger)
		mu.Unlock()
		started <- trigger
		<-release
		return ReloadResult{OK: true, Trigger: trigger}
	}
	upgraded := make(chan []reloadRequest, 4)
	s.runUpgrade = func(reqs []reloadRequest) ReloadResult {
		mu.Lock()
		order = append(order, fmt.Sprintf("upgrade: %d requests", len(reqs)))
		mu.Unlock()
		upgraded <- reqs
		// An upgrade that returns failed; the process would be replaced
		// otherwise.
		return ReloadResult{Errors: []string{"upgrade failed: test"}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.reloader(ctx)

	s.enqueueReload("SIGHUP", nil)
	if got := <-started; got != "SIGHUP" {
		t.Fatalf("first reload %q", got)
	}
	// While it runs: an upgrade, a reload with a caller waiting, another
	// upgrade signal.
	s.enqueueUpgrade("SIGUSR2", nil)
	reply := make(chan ReloadResult, 1)
	go func() { reply <- s.requestReload("control socket") }()
	waitPending(t, s, 2)
	s.enqueueUpgrade("SIGUSR2", nil)
	waitPending(t, s, 3)

	select {
	case reqs := <-upgraded:
		t.Fatalf("upgrade ran during a reload: %v", reqs)
	case <-time.After(50 * time.Millisecond):
	}
	release <- struct{}{}
	if got := <-started; got != "control socket" {
		t.Fatalf("second reload %q, want the pending one", got)
	}
	select {
	case reqs := <-upgraded:
		t.Fatalf("upgrade ran before the pending reload finished: %v", reqs)
	case <-time.After(50 * time.Millisecond):
	}
	release <- struct{}{}
	if r := <-reply; r.Trigger != "control socket" {
		t.Errorf("reload caller answered by %q", r.Trigger)
	}
	select {
	case reqs := <-upgraded:
		if len(reqs) != 2 {
			t.Errorf("upgrade got %d requests, want both", len(reqs))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upgrade never ran")
	}
	select {
	case reqs := <-upgraded:
		t.Fatalf("a second upgrade ran: %v", reqs)
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"reload: SIGHUP", "reload: control socket", "upgrade: 2 requests"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("order %q, want %q", order, want)
	}
}
