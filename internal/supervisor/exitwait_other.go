//go:build !linux

package supervisor

// awaitExit: without pidfds the caller waits the blocking way.
func awaitExit(int) bool { return false }
