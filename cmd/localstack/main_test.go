package main

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestStartSpiceDBStops: startSpiceDB starts SpiceDB and dials it, and the
// stop function it returns closes the client and stops the server (it once
// called itself at Ctrl-C, a stack overflow).
func TestStartSpiceDBStops(t *testing.T) {
	sdb, client, dsInfo, stop, err := startSpiceDB(context.Background(), "memory")
	if err != nil {
		t.Fatal(err)
	}
	if client == nil || dsInfo != "memory datastore" {
		t.Fatalf("client %v, dsInfo %q", client, dsInfo)
	}
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("stop did not return")
	}
	if c, err := net.DialTimeout("tcp", sdb.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("SpiceDB still listens on %s after stop", sdb.Addr)
	}
}
