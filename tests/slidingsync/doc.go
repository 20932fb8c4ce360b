// Package slidingsync drives a real Hearth process the way a phone running
// Element X does, with a simplified sliding sync client (MSC4186, the
// unstable dialect today's clients speak) written from the MSC alone: it
// imports nothing of Hearth and speaks only HTTP. It is a module of its own
// so that nothing of the server's packages can leak into the client. The
// test builds ./cmd/hearth from this checkout and runs it on SQLite in a
// temporary directory, restarting it halfway.
package slidingsync
