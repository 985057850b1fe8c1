//go:build !linux

package supervisor

// awaitExit: without pidfds the caller's Wait blocks until the exit.
func awaitExit(int) {}
