package postgres

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/store"
	"github.com/mcpgate/mcpgate/internal/store/postgres/pgtest"
)

// helperEnv makes the test binary a child of TestMultiProcess (the usual
// re-exec pattern); its value is the database URL.
const helperEnv = "MCPGATE_PG_TEST_HELPER"

// raceHelper opens the store on "open" (all children at once, on an empty
// database: the migrations race too) and answers "opened"; on "race" it
// redeems the shared code, rotates the shared refresh token to a successor
// of its own and counts one event, and reports one line of outcomes.
func raceHelper(url string, in io.Reader, out io.Writer) error {
	id := os.Getenv("MCPGATE_PG_TEST_ID")
	lines := bufio.NewScanner(in)
	next := func(want string) error {
		if !lines.Scan() || lines.Text() != want {
			return fmt.Errorf("want %q on stdin, got %q", want, lines.Text())
		}
		return nil
	}
	if err := next("open"); err != nil {
		return err
	}
	ctx := context.Background()
	s, err := Open(ctx, Config{URL: url, MaxConns: 2})
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintln(out, "opened")
	if err := next("race"); err != nil {
		return err
	}
	now := time.Now()
	outcome := func(err error) string {
		switch {
		case err == nil:
			return "won"
		case errors.Is(err, store.ErrAlreadyUsed), errors.Is(err, store.ErrAlreadyRotated):
			return "lost"
		}
		return "error:" + strings.ReplaceAll(err.Error(), " ", "_")
	}
	_, cerr := s.ConsumeAuthCode(ctx, "shared-code", now)
	rerr := s.RotateRefreshToken(ctx, "shared-rt", "nonce-"+id, &store.RefreshToken{TokenHash: "succ-" + id,
		GrantID: "g1", ClientID: "c1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, now)
	n, err := s.CountEvent(ctx, "k", time.Minute, now)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s %s %d\n", outcome(cerr), outcome(rerr), n)
	return nil
}

// TestMultiProcess: separate processes (as separate nodes are) open one
// empty database at once, then race for one code and one refresh token:
// exactly one wins each, and their counts draw on one budget.
func TestMultiProcess(t *testing.T) {
	const children = 4
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	type child struct {
		cmd    *exec.Cmd
		in     io.WriteCloser
		out    *bufio.Scanner
		stderr bytes.Buffer
	}
	kids := make([]*child, children)
	for i := range kids {
		c := &child{cmd: exec.CommandContext(ctx, os.Args[0], "-test.run=^$")}
		c.cmd.Env = append(os.Environ(), helperEnv+"="+url, fmt.Sprintf("MCPGATE_PG_TEST_ID=%d", i))
		c.cmd.Stderr = &c.stderr
		var err error
		if c.in, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		c.out = bufio.NewScanner(stdout)
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		kids[i] = c
	}
	defer func() {
		for i, c := range kids {
			c.in.Close()
			if err := c.cmd.Wait(); err != nil {
				t.Errorf("child %d: %v\n%s", i, err, c.stderr.String())
			}
		}
	}()
	tell := func(msg string) {
		for _, c := range kids {
			fmt.Fprintln(c.in, msg)
		}
	}
	read := func(i int) string {
		if !kids[i].out.Scan() {
			t.Fatalf("child %d said nothing\n%s", i, kids[i].stderr.String())
		}
		return kids[i].out.Text()
	}
	tell("open")
	for i := range kids {
		if got := read(i); got != "opened" {
			t.Fatalf("child %d: %q", i, got)
		}
	}
	s := open(t, url)
	defer s.Close()
	now := time.Now()
	if err := s.CreateAuthCode(ctx, &store.AuthCode{CodeHash: "shared-code", GrantID: "g1", ClientID: "c1", ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshToken(ctx, &store.RefreshToken{TokenHash: "shared-rt", GrantID: "g1", ClientID: "c1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tell("race")
	var codeWins, rotateWins int
	var counts []int
	for i := range kids {
		var c, r string
		var n int
		line := read(i)
		if _, err := fmt.Sscan(line, &c, &r, &n); err != nil || strings.HasPrefix(c, "error") || strings.HasPrefix(r, "error") {
			t.Fatalf("child %d: %q", i, line)
		}
		if c == "won" {
			codeWins++
		}
		if r == "won" {
			rotateWins++
		}
		counts = append(counts, n)
	}
	slices.Sort(counts)
	if codeWins != 1 || rotateWins != 1 || !slices.Equal(counts, []int{1, 2, 3, 4}) {
		t.Fatalf("code won by %d, rotation by %d, counts %v; want 1, 1, [1 2 3 4]", codeWins, rotateWins, counts)
	}
}
